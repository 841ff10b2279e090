#!/usr/bin/env python3
"""Hostile clients against a real `zeroflow serve` (issue 9): slow readers, idle sockets, long
one-word prompts, while /health is polled. Prints what happened and ends with one
`hostile key=value ...` line. Usage: bench/hostile/run.py [--binary build/zeroflow] [--hf DIR]"""
import argparse, json, os, socket, subprocess, sys, threading, time, urllib.request

ap = argparse.ArgumentParser()
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap.add_argument("--binary", default=os.path.join(root, "build", "zeroflow"))
ap.add_argument("--hf", default=os.path.join(root, "tests", "golden", "hf", "tiny-gpt2"))
ap.add_argument("--port", type=int, default=18431)
ap.add_argument("--idle", type=int, default=600)
args = ap.parse_args()

srv = subprocess.Popen([args.binary, "serve", "--hf", args.hf, "--port", str(args.port),
                        "--header-timeout-s", "5", "--write-timeout-s", "5"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
base = f"http://127.0.0.1:{args.port}"
for _ in range(200):
    try:
        urllib.request.urlopen(base + "/health", timeout=1).read(); break
    except Exception:
        time.sleep(0.1)

def post_raw(body, rcvbuf=0):
    s = socket.socket()
    if rcvbuf: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", args.port))
    b = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(b)}\r\n\r\n".encode() + b)
    return s

def quiet_latency(seconds=1.0):  # the baseline: /health with no attack
    out, end = [], time.time() + seconds
    while time.time() < end:
        t = time.time(); urllib.request.urlopen(base + "/health", timeout=5).read()
        out.append(time.time() - t); time.sleep(0.05)
    return max(out)
quiet = quiet_latency()
lat, stop = [], False
def poll():
    while not stop:
        t = time.time()
        try:
            urllib.request.urlopen(base + "/health", timeout=30).read(); lat.append(time.time() - t)
        except Exception:
            lat.append(float("inf"))
        time.sleep(0.05)
th = threading.Thread(target=poll); th.start()
time.sleep(0.5)
t0 = time.time()
# 6 streaming clients that never read (n=16, logprobs=20, up to the context)
slow = [post_raw({"prompt": "a b", "max_tokens": 120, "n": 16, "logprobs": 20, "stream": True,
                  "ignore_eos": True}, 4096) for _ in range(6)]
# two 300 KB one-word prompts (over the 256 KiB limit: refused before tokenizing) and two of
# 200 KB (tokenized on the prepare threads, then over the context: 400), sent before the flood
codes = [None] * 4
def long_prompt(i, n):
    try:
        r = urllib.request.urlopen(urllib.request.Request(base + "/v1/completions",
            data=json.dumps({"prompt": "a" * n, "max_tokens": 1}).encode(),
            headers={"Content-Type": "application/json"}), timeout=60)
        codes[i] = r.status
    except urllib.error.HTTPError as e:
        codes[i] = e.code
    except Exception as e:
        codes[i] = "closed"
longs = [threading.Thread(target=long_prompt, args=(i, n))
         for i, n in enumerate((300_000, 300_000, 200_000, 200_000))]
for t in longs: t.start()
time.sleep(0.3)
# idle sockets
idle = []
for _ in range(args.idle):
    try:
        s = socket.socket(); s.connect(("127.0.0.1", args.port)); idle.append(s)
    except OSError:
        break
for t in longs: t.join()
time.sleep(8)  # write and header timeouts pass
stop = True; th.join()
metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
def metric(name):
    for line in metrics.splitlines():
        if line.startswith(name + " "): return float(line.split()[-1])
    return -1
for s in slow + idle: s.close()
srv.terminate(); srv.wait()
worst = max(lat)
print(f"health polls {len(lat)}, worst latency {worst*1000:.0f} ms under attack, "
      f"{quiet*1000:.1f} ms without; long prompts -> {codes}")
print("\n".join(l for l in metrics.splitlines() if l.startswith("zeroflow_http_dropped")
                or l.startswith("zeroflow_http_buffered")))
def drops(reason):
    return metric('zeroflow_http_dropped_connections_total{reason="%s"}' % reason)
wt, ol, it = drops("write_timeout"), drops("output_limit"), drops("idle_timeout")
print(f"hostile health_worst_ms={worst*1000:.0f} health_quiet_worst_ms={quiet*1000:.1f} "
      f"health_worst_ratio={worst/quiet:.1f} health_failures={sum(l == float('inf') for l in lat)} "
      f"idle_sockets={len(idle)} "
      f"dropped_write_timeout={wt:.0f} dropped_output_limit={ol:.0f} dropped_idle={it:.0f} "
      f"long_prompt_codes={'/'.join(map(str, codes))}")
