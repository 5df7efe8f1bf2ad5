"""`sld serve`: a ComfyUI-compatible HTTP + WebSocket server over the headless executor, with a safety
policy enforced on the server.

    options   the `sld serve` command line (argparse only: `sld --help` must stay cheap)
    main      start-up: checks, executor, history, the aiohttp site, shutdown
    app       the routes (ComfyUI's server.py is the contract) and the middlewares (token, origin, limits)
    jobs      the prompt queue and the one worker thread that runs it through `headless.run.Executor`
    hub       WebSocket clients: one bounded outbox each, so no client can hold up the worker
    history   the durable record (SQLite in the output folder) of every prompt and file
    policy    --require-sld / --require-checker, checked on the validated graph before it is queued
    files     /view and /upload/image paths that never leave their folders; uploads must be images
    info      /object_info, /system_stats, /models, /features
    frontend  --frontend: ComfyUI's web app (the comfyui-frontend-package wheel) and the routes it calls
    userdata  the web app's settings and user files, in a hidden folder of the output folder

aiohttp (the `serve` extra) is imported by `app` and by `frontend`, which only `app` imports (--frontend).
"""
