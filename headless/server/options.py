"""The `sld serve` command line. argparse only: `sld --help` builds it without importing aiohttp or torch."""
import ipaddress

AUTH_TOKEN_ENV = "SLD_AUTH_TOKEN"
# The presets --require-sld accepts (sld_core.guidance.PRESETS less "disabled"), written out so that
# building the parser imports no torch; tests/server/test_policy.py holds the two equal.
POLICY_PRESETS = ("weak", "medium", "strong", "max")


def add_parser(sub, add_model_args, add_speed_args, devices):
    serve = sub.add_parser("serve", help="run a ComfyUI-compatible server (HTTP + WebSocket API) with a safety policy",
                           description="Serve ComfyUI's HTTP and WebSocket API for SLD workflows: existing ComfyUI "
                                       "clients and scripts queue prompts here. Loopback only unless --listen names "
                                       "another address, which needs --auth-token (or --insecure).")
    serve.add_argument("--listen", default="127.0.0.1", metavar="ADDRESS",
                       help="address to listen on; default 127.0.0.1 (this machine only)")
    serve.add_argument("--port", type=int, default=8188, help="default 8188 (ComfyUI's); 0 picks a free port")
    add_model_args(serve)
    serve.add_argument("--input-dir", default="input", help="LoadImage's folder and /upload/image's target; default ./input")
    serve.add_argument("--output-dir", default="output",
                       help="where SaveImage writes and the server keeps its history database; default ./output")
    serve.add_argument("--device", default="auto", choices=devices, help="default: auto (CUDA, else MPS, else CPU)")
    add_speed_args(serve)
    serve.add_argument("--max-queue", type=int, default=100, metavar="N",
                       help="prompts that may wait; more are answered 503 with Retry-After; default 100")
    serve.add_argument("--auth-token", metavar="TOKEN",
                       help=f"require this token on every request (Authorization: Bearer TOKEN, HTTP Basic with "
                            f"TOKEN as password, or ?token=TOKEN); default ${AUTH_TOKEN_ENV} if set")
    serve.add_argument("--insecure", action="store_true",
                       help="allow a non-loopback --listen without a token (anyone who can reach the port may use it)")
    serve.add_argument("--require-sld", metavar="PRESET", choices=POLICY_PRESETS,
                       help=f"refuse graphs with a sampler that is not SLD at PRESET or stronger ({', '.join(POLICY_PRESETS)})")
    serve.add_argument("--require-checker", metavar="NAME",
                       help="refuse graphs with an output image that does not come straight from SLD Safety Checker "
                            "with checker NAME (e.g. open_nsfw)")
    serve.add_argument("--action", choices=("black_out", "blur"),  # None: not given, the policy file's or black_out
                       help="the checker action --require-checker demands (black_out is always accepted); default black_out")
    serve.add_argument("--policy", metavar="FILE",
                       help="read require_sld, require_checker and action from a .toml or .json file; "
                            "flags given as well override its values")
    serve.add_argument("--max-upload-mb", type=float, default=20, metavar="MB", help="largest /upload/image; default 20")
    serve.add_argument("--max-body-mb", type=float, default=8, metavar="MB", help="largest JSON request body; default 8")
    serve.add_argument("--frontend", action="store_true",
                       help="also serve ComfyUI's web editor at / (needs: pip install 'comfyui-sld[frontend]')")
    serve.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    serve.set_defaults(json=False)
    return serve


def is_loopback(host):
    """Whether `host` (a --listen value) reaches only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, "0.0.0.0" style wildcards are parsed above; anything else may be public
