#!/usr/bin/env python3
"""An external leo plugin for tests of multi-process stages (standard library only).

Every rank writes what it was told (its invocation's rank, world_size and rendezvous, and the
rank variables of its environment) to `DIR/seen-rank-K.json`, DIR being the params' `dir`.

Params `mode`:
- `exchange`: rank 0 listens at the rendezvous address, rank 1 connects and the two swap a
  message; rank 0 writes output `result`. Rank 1 also prints text, a `log` event, and events
  the engine must ignore (a metric, an output).
- `fail`: rank 0 listens at the rendezvous address, ignores SIGTERM, writes `DIR/rank0.pid` and
  waits for a connection that never comes; rank 1 waits for that file and exits 3.
- `single`: a one-process stage; writes output `result`.
"""
import json
import os
import signal
import socket
import sys
import time

ENV = ["LEO_RANK", "LEO_WORLD_SIZE", "LEO_RENDEZVOUS", "RANK", "WORLD_SIZE", "LOCAL_RANK",
       "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LEO_RUN_ID"]


def emit(event):
    print(json.dumps(event), flush=True)


def describe():
    params = json.load(sys.stdin)
    if params.get("mode") not in ("exchange", "fail", "single"):
        print(json.dumps({"field": "mode", "message": "must be exchange, fail or single"}))
        sys.exit(1)
    print(json.dumps({"version": "ranks-1", "outputs": ["result"]}))


def listen(rendezvous):
    host, port = rendezvous.rsplit(":", 1)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen(1)
    return server


def connect(rendezvous):
    """Connects to rank 0, which may not listen yet (as torch.distributed's TCPStore does)."""
    host, port = rendezvous.rsplit(":", 1)
    deadline = time.monotonic() + 60
    while True:
        try:
            return socket.create_connection((host, int(port)), timeout=60)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def read_line(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def write_output(inv, text):
    out = os.path.join(inv["output_dir"], "result")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "result.txt"), "w") as f:
        f.write(text)
    emit({"event": "output", "name": "result", "path": out})


def run(invocation_path):
    with open(invocation_path) as f:
        inv = json.load(f)
    params = inv["params"]
    rank = inv["rank"]
    seen = {
        "invocation_file": os.path.basename(invocation_path),
        "rank": rank,
        "world_size": inv["world_size"],
        "rendezvous": inv["rendezvous"],
        "env": {name: os.environ.get(name) for name in ENV},
    }
    with open(os.path.join(params["dir"], f"seen-rank-{rank}.json"), "w") as f:
        json.dump(seen, f)
    mode = params["mode"]

    if mode == "single":
        write_output(inv, "single")
    elif mode == "exchange" and rank == 0:
        server = listen(inv["rendezvous"])
        conn, _ = server.accept()
        heard = read_line(conn)
        conn.sendall(b"hello from rank 0\n")
        conn.close()
        emit({"event": "metric", "step": 1, "name": "ranks", "value": inv["world_size"]})
        write_output(inv, f"rank 0 heard: {heard}")
    elif mode == "exchange":
        conn = connect(inv["rendezvous"])
        conn.sendall(f"hello from rank {rank}\n".encode())
        reply = read_line(conn)
        conn.close()
        with open(os.path.join(params["dir"], f"reply-rank-{rank}.txt"), "w") as f:
            f.write(reply)
        print(f"rank {rank} heard: {reply}", flush=True)
        print(f"rank {rank} says bye on stderr", file=sys.stderr, flush=True)
        emit({"event": "log", "level": "warn", "message": f"a log event of rank {rank}"})
        emit({"event": "metric", "step": 1, "name": "not_rank_0", "value": 1.0})
        fake = os.path.join(inv["work_dir"], f"not-rank-0-{rank}")
        os.makedirs(fake, exist_ok=True)
        emit({"event": "output", "name": "result", "path": fake})
    elif mode == "fail" and rank == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server = listen(inv["rendezvous"])
        with open(os.path.join(params["dir"], "rank0.pid.tmp"), "w") as f:
            f.write(str(os.getpid()))
        os.rename(os.path.join(params["dir"], "rank0.pid.tmp"),
                  os.path.join(params["dir"], "rank0.pid"))
        print("rank 0 waiting for rank 1", flush=True)
        server.accept()  # never returns: rank 1 does not connect
        sys.exit("rank 0 was not supposed to get a connection")
    else:
        pidfile = os.path.join(params["dir"], "rank0.pid")
        deadline = time.monotonic() + 60
        while not os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.02)
        print(f"rank {rank} gives up", file=sys.stderr, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["describe"]:
        describe()
    elif sys.argv[1:2] == ["run"]:
        run(sys.argv[2])
    else:
        sys.exit("usage: ranks.py describe | run INVOCATION.json")
