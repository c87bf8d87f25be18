"""Times the execute round trip of a trivial cell through jupyter_client (execute_request sent ->
execute_reply received) against the installed grid-typescript kernel. Prints JSON: the times in ms.
Usage: python3 jupyter_roundtrip.py <rounds>"""
import json
import sys
import time

from jupyter_client import KernelManager

rounds = int(sys.argv[1])
km = KernelManager(kernel_name="grid-typescript")
km.start_kernel()
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=120)


def round_trip(code):
    start = time.perf_counter()
    msg_id = kc.execute(code, store_history=False)
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    if reply["content"]["status"] != "ok":
        raise RuntimeError(reply["content"])
    return (time.perf_counter() - start) * 1000


for i in range(50):
    round_trip(f"{i} + 1")  # warm-up: JIT, esbuild service
times = [round_trip(f"{1000 + i} + 1") for i in range(rounds)]
kc.shutdown()
kc.stop_channels()
km.shutdown_kernel(now=False)
print(json.dumps(times))
