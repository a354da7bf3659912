"""`just bench store`: upload and download of one large file to a local S3 server (s3s-fs on
loopback), by leo (an artifact through `ArtifactStore`) and by rclone, in one run. Prints both
throughputs, the ratios and each side's peak resident memory; checks the downloads are intact.

Usage: store.py --leo TARGET/release/examples/store_bench --s3s-fs PATH [--size-gb 2] [--dir DIR]
"""
import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--leo", required=True)
ap.add_argument("--s3s-fs", required=True)
ap.add_argument("--size-gb", type=float, default=2.0)
ap.add_argument("--dir", default=None, help="where the file and the server's data go (default: a temp dir)")
args = ap.parse_args()

work = tempfile.mkdtemp(prefix="leo-bench-store-", dir=args.dir)
try:
    size = int(args.size_gb * 2**30)
    src = os.path.join(work, "payload.bin")
    block = os.urandom(2**20)
    with open(src, "wb") as f:
        for i in range(size // len(block)):
            # Vary the blocks so nothing downstream can deduplicate them.
            f.write(i.to_bytes(8, "little") + block[8:])
    root = os.path.join(work, "s3")
    os.makedirs(os.path.join(root, "bench"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key, secret = "benchkey", "benchsecret"
    server = subprocess.Popen(
        [args.s3s_fs, "--host", "127.0.0.1", "--port", str(port), "--access-key", key,
         "--secret-key", secret, root],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                sys.exit("s3s-fs did not start")
            time.sleep(0.05)
    endpoint = f"http://127.0.0.1:{port}"
    # Only this server's settings: an inherited AWS_* (a CA bundle, a profile) must not apply.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env = dict(base, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true",
               RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Other",
               RCLONE_CONFIG_BENCH_ENDPOINT=endpoint, RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=key,
               RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=secret, RCLONE_CONFIG_BENCH_REGION="us-east-1",
               RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true")

    def timed(cmd):
        """Runs cmd under /usr/bin/time; returns (seconds, peak RSS in MB, stdout)."""
        start = time.perf_counter()
        run = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            sys.exit(f"{cmd[0]} failed:\n{run.stderr}")
        rss_kb = int(run.stderr.strip().splitlines()[-1])
        return seconds, rss_kb / 1024, run.stdout

    def sha256(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(2**22):
                h.update(chunk)
        return h.hexdigest()

    want = sha256(src)
    results = {}
    up, up_rss, out = timed([args.leo, "upload", "s3://bench/leo", src])
    digest = json.loads(out)["digest"]
    dest = os.path.join(work, "leo-out")
    down, down_rss, _ = timed([args.leo, "download", "s3://bench/leo", digest, dest])
    assert sha256(os.path.join(dest, "payload.bin")) == want, "leo's download differs"
    results["leo"] = (up, down, max(up_rss, down_rss))
    shutil.rmtree(dest)

    up, up_rss, _ = timed(["rclone", "copyto", src, "bench:bench/rclone/payload.bin"])
    dest = os.path.join(work, "rclone-out.bin")
    down, down_rss, _ = timed(["rclone", "copyto", "bench:bench/rclone/payload.bin", dest])
    assert sha256(dest) == want, "rclone's download differs"
    results["rclone"] = (up, down, max(up_rss, down_rss))
    server.terminate()
    server.wait()

    version = subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout.split("\n")[0]
    mb = size / 2**20
    print(f"file: {mb:,.0f} MiB of incompressible data; server: s3s-fs on 127.0.0.1; peer: {version}")
    for name, (u, d, rss) in results.items():
        print(f"{name:7} upload {u:6.2f} s ({mb / u:6.1f} MiB/s)   download {d:6.2f} s ({mb / d:6.1f} MiB/s)   peak RSS {rss:6.1f} MiB")
    (lu, ld, lr), (ru, rd, _) = results["leo"], results["rclone"]
    print(f"ratio leo/rclone throughput: upload {ru / lu:.2f}x, download {rd / ld:.2f}x; leo peak RSS {lr:.0f} MiB")
    print("leo's upload includes hashing the file (SHA-256, content addressing); its download verifies the hash")
finally:
    shutil.rmtree(work, ignore_errors=True)
