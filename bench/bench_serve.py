"""`sld serve`: what a prompt costs over HTTP + WebSocket against the same workflow run by the
in-process executor, prompts per second with a warm cache, and a load test of concurrent clients.

Every run is `workflows/api/sld_txt2img.json` on the embedded demo model with only the seed changed,
so the loader and text encodes stay cached on both sides (the sampler, decode and save re-run). The
in-process side is `sld run`'s executor with `sld run`'s process settings (prepare_process), in this
process; the server is `sld serve` in its own. They never run at the same time. A served prompt is
timed as a client sees it: from POST /prompt to the final `executing` message (node null). Runs are
paired, the order alternating, and each ratio is the median of the pairs' ratios. Thread counts are
the environment's (torch's default unless OMP_NUM_THREADS is set), the same for both processes.

    python bench/bench_serve.py [--reps 15] [--burst 20] [--bursts 3] [--out DIR]
    python bench/bench_serve.py --load 8x25 [--steps N] [--out DIR]

--load CxN: C clients at once, each with its own WebSocket, queueing N prompts one after another
(all seeds different). Checks: each prompt was answered exactly once, to the client that queued it
(one execution_success and one final `executing`, nothing for other clients' prompts); each is in
/history, completed, with one image; the images in /history are exactly the PNGs on disk, with no
duplicate names or contents. The server's resident memory is read after every prompt.
"""
import argparse
import hashlib
import json
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import torch
import websocket

from harness import emit, fmt_spread, machine_line
from comfyui_sld.headless.process import prepare_process
from comfyui_sld.headless.run import Executor
from comfyui_sld.nodes.context import Runtime
from comfyui_sld.nodes.folders import ModelFolders

WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "api" / "sld_txt2img.json"
READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def with_seed(prompt, seed, steps=None):
    prompt = json.loads(json.dumps(prompt))
    sampler = next(n for n in prompt.values() if n["class_type"] == "SLDKSampler")["inputs"]
    sampler["seed"] = seed
    if steps:
        sampler["steps"] = steps
    return prompt


class Client:
    """A ComfyUI client as websockets_api_example.py writes one: a WebSocket under its own client id,
    prompts POSTed with that id, completion read from the messages. Keeps every message it gets.

    A thread reads the socket all the time, as the web app does: websocket-client answers the server's
    heartbeat pings only while reading, and a client silent past the pong timeout is disconnected."""

    def __init__(self, port):
        self.url, self.id = f"http://127.0.0.1:{port}", str(uuid.uuid4())
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?clientId={self.id}", timeout=None)
        self.messages, self.inbox = [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._receive()  # the first status

    def post(self, prompt):
        data = json.dumps({"prompt": prompt, "client_id": self.id}).encode()
        request = urllib.request.Request(self.url + "/prompt", data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())["prompt_id"]

    def wait(self, prompt_ids):
        left = set(prompt_ids)
        while left:
            message = self._receive()
            if message["type"] in ("execution_error", "execution_interrupted"):
                raise RuntimeError(message)
            if message["type"] == "executing" and message["data"]["node"] is None:
                left.discard(message["data"]["prompt_id"])

    def run(self, prompt):
        """Seconds from POST to the prompt's final message."""
        start = time.perf_counter()
        self.wait([self.post(prompt)])
        return time.perf_counter() - start

    def drain(self, seconds):
        """Whatever else arrives within `seconds` (a late duplicate would show here)."""
        try:
            while True:
                self._receive(seconds)
        except queue.Empty:
            pass

    def _read(self):
        try:
            while True:
                self.inbox.put(json.loads(self.ws.recv()))
        except (websocket.WebSocketException, OSError, ValueError) as error:  # ValueError: "" once closed
            self.inbox.put(error)

    def _receive(self, timeout=600):
        message = self.inbox.get(timeout=timeout)
        if isinstance(message, Exception):
            self.inbox.put(message)  # every later call fails the same way
            raise RuntimeError(f"client {self.id}: the WebSocket closed: {message!r}")
        self.messages.append(message)
        return message


class ServedProcess:
    """`sld serve` on a free loopback port, its output in `folder/served`."""

    def __init__(self, folder):
        self.folder = folder
        self.log_path = folder / "serve.log"
        self.log = open(self.log_path, "w")
        command = [sys.executable, "-m", "comfyui_sld.headless.cli", "serve", "--port", "0", "--device", "cpu",
                   "--output-dir", str(folder / "served"), "--input-dir", str(folder / "input"), "--quiet"]
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=folder)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            found = READY.search(self.log_path.read_text())
            if found:
                self.port = int(found.group(1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("sld serve did not start:\n" + self.log_path.read_text())

    def rss_mb(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=600) as response:
            return json.loads(response.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def overhead(args, prompt, tmp):
    server = ServedProcess(tmp)
    try:
        client = Client(server.port)
        prepare_process(torch.device("cpu"), "auto")  # what `sld run` (and the server) set for the process
        executor = Executor(Runtime(models=ModelFolders(tmp / "models"), output_dir=tmp / "direct", device="cpu"),
                            progress=False)
        for seed in (1, 2):  # model load and first runs, outside the figures
            client.run(with_seed(prompt, seed))
            executor.run(with_seed(prompt, seed))

        served, direct = [], []
        for rep in range(args.reps):
            seeded = with_seed(prompt, 1000 + rep)
            sides = [(served, lambda: client.run(seeded)), (direct, lambda: _timed(executor.run, seeded))]
            for times, run in sides if rep % 2 == 0 else sides[::-1]:
                times.append(run())

        served_rates, direct_rates = [], []
        for burst in range(args.bursts):
            seeds = [100_000 * (burst + 1) + i for i in range(args.burst)]

            def served_burst():
                client.wait([client.post(with_seed(prompt, seed)) for seed in seeds])

            def direct_burst():
                for seed in seeds:
                    executor.run(with_seed(prompt, seed))

            sides = [(served_rates, served_burst), (direct_rates, direct_burst)]
            for rates, run in sides if burst % 2 == 0 else sides[::-1]:
                rates.append(args.burst / _timed(run))
    finally:
        server.stop()

    ratios = [s / d for s, d in zip(served, direct)]
    overhead_ms = [(s - d) * 1e3 for s, d in zip(served, direct)]
    rate_ratios = [s / d for s, d in zip(served_rates, direct_rates)]
    print(f"per prompt: served {statistics.median(served) * 1e3:.1f} ms, in-process {statistics.median(direct) * 1e3:.1f} ms; "
          f"served / in-process {fmt_spread(ratios)} over {args.reps} pairs; overhead {fmt_spread(overhead_ms, 1)} ms")
    print(f"warm bursts of {args.burst} (x{args.bursts}): served {fmt_spread(served_rates, 2)} prompts/s, in-process "
          f"{fmt_spread(direct_rates, 2)}; served / in-process {fmt_spread(rate_ratios)}")
    return dict(bench="serve", reps=args.reps, served_s=served, direct_s=direct, ratio=_spread(ratios),
                overhead_ms=_spread(overhead_ms), burst=args.burst, served_per_s=served_rates,
                direct_per_s=direct_rates, rate_ratio=_spread(rate_ratios))


def load_test(args, prompt, tmp):
    clients, per_client = (int(n) for n in args.load.lower().split("x"))
    total = clients * per_client
    server = ServedProcess(tmp)
    posted, latency, rss, failures = [], [], [], []
    lock = threading.Lock()
    workers = []
    try:
        Client(server.port).run(with_seed(prompt, 0, args.steps))  # model load, outside the figures
        rss_start = server.rss_mb()

        def one_client(index):
            client = Client(server.port)
            workers.append(client)
            for k in range(per_client):
                try:
                    start = time.perf_counter()
                    prompt_id = client.post(with_seed(prompt, 10_000 * (index + 1) + k, args.steps))
                    with lock:
                        posted.append((client.id, prompt_id))
                    client.wait([prompt_id])
                except Exception as error:  # reported below; the other clients go on
                    failures.append(f"client {index} prompt {k}: {error!r}")
                    continue
                with lock:
                    latency.append(time.perf_counter() - start)
                    rss.append(server.rss_mb())

        start = time.perf_counter()
        threads = [threading.Thread(target=one_client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        for client in workers:
            client.drain(1.0)
        history = server.get("/history")
    finally:
        server.stop()

    checks, details = load_checks(posted, workers, history, tmp / "served", total, failures)
    first, twentieth, last = rss[0], rss[min(19, len(rss) - 1)], rss[-1]
    slope = _slope(rss[19:]) * 100 if len(rss) > 21 else float("nan")
    steps = f"{args.steps} steps" if args.steps else "the workflow's steps"
    print(f"{clients} clients x {per_client} prompts ({steps}): {total / seconds:.2f} "
          f"prompts/s over {seconds:.0f} s; latency {fmt_spread([t * 1e3 for t in latency], 0)} ms (POST to final message)")
    print(f"server RSS: {rss_start:.1f} MB after the warm-up prompt, {first:.1f} after the first, {twentieth:.1f} after "
          f"the 20th, {last:.1f} after the last (max {max(rss):.1f}); slope from the 20th on {slope:+.2f} MB per 100 prompts")
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    for line in details + failures[:10]:
        print(f"  {line}")
    return dict(bench="serve_load", clients=clients, per_client=per_client, steps=args.steps, seconds=seconds,
                per_s=total / seconds, latency_s=latency, rss_mb=rss, rss_mb_warmup=rss_start,
                rss_first_20th_last=(first, twentieth, last), rss_slope_mb_per_100=slope, checks=checks,
                failures=failures), all(checks.values())


def load_checks(posted, clients, history, output, total, failures):
    """{check: passed} and lines describing what failed."""
    mine = {client.id: {pid for cid, pid in posted if cid == client.id} for client in clients}
    finals, successes, strays = Counter(), Counter(), []
    for client in clients:
        for message in client.messages:
            pid = message["data"].get("prompt_id") if isinstance(message.get("data"), dict) else None
            if pid is None:
                continue
            if pid not in mine[client.id]:
                strays.append(f"client {client.id} got {message['type']} of {pid}")
            if message["type"] == "executing" and message["data"]["node"] is None:
                finals[pid] += 1
            elif message["type"] == "execution_success":
                successes[pid] += 1
    ids = [pid for _, pid in posted]
    images = [(i["subfolder"], i["filename"]) for entry in history.values() for out in entry["outputs"].values()
              for i in out.get("images", [])]
    on_disk = sorted(p.relative_to(output) for p in output.rglob("*.png"))
    contents = {hashlib.sha256(p.read_bytes()).hexdigest() for p in output.rglob("*.png")}
    checks = {
        f"{total} prompts queued, each id once, no client error": len(ids) == len(set(ids)) == total and not failures,
        "each answered exactly once, to its own client (1 success + 1 final executing)":
            all(finals[pid] == successes[pid] == 1 for pid in ids) and not strays,
        "each in /history, completed, with one image":
            all(pid in history and history[pid]["status"]["completed"] and
                sum(len(o.get("images", [])) for o in history[pid]["outputs"].values()) == 1 for pid in ids),
        "the images in /history are the PNGs on disk (warm-up included), names and contents unique":
            len(images) == len(set(images)) == len(on_disk) == len(contents) == total + 1
            and {Path(sub, name) for sub, name in images} == set(on_disk),
    }
    details = strays[:5] + [f"answers {dict(Counter(finals.values()))}, successes {dict(Counter(successes.values()))}, "
                            f"history {len(history)}, images {len(images)}, on disk {len(on_disk)}, "
                            f"distinct contents {len(contents)}"]
    return checks, details


def _slope(values):
    """Least-squares slope per step of a series."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / sum((x - mean_x) ** 2 for x in range(n))


def _spread(values):
    return min(values), statistics.median(values), max(values)


def _timed(function, *args):
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="paired runs for the overhead")
    parser.add_argument("--burst", type=int, default=20, help="prompts per warm burst (queued at once when served)")
    parser.add_argument("--bursts", type=int, default=3, help="alternated bursts per side")
    parser.add_argument("--load", metavar="CxN", help="the load test instead: C concurrent clients x N prompts")
    parser.add_argument("--steps", type=int, help="sampling steps for --load (default: the workflow's)")
    parser.add_argument("--out", type=Path, help="folder for the raw results (serve.json / serve_load.json)")
    args = parser.parse_args()
    prompt = json.loads(WORKFLOW.read_text())
    print(machine_line("cpu"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        record, ok = load_test(args, prompt, Path(tmp)) if args.load else (overhead(args, prompt, Path(tmp)), True)
    record.update(machine=machine_line("cpu"), loadavg_before=load_before, loadavg_after=os.getloadavg(),
                  omp_num_threads=os.environ.get("OMP_NUM_THREADS"), torch_threads=torch.get_num_threads())
    print(f"load average before {load_before[0]:.2f}, after {record['loadavg_after'][0]:.2f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{record['bench']}.json").write_text(json.dumps(record, indent=1))
    emit({k: v for k, v in record.items() if not isinstance(v, list) or len(v) <= 3})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
