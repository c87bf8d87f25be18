"""Drives the installed grid-typescript kernel through jupyter_client, as a front end would, and prints
one JSON report on stdout for test/integration/jupyter-kernel.test.ts to check. Usage:
    python3 drive_kernel.py <notebook dir> [<round trips to time>]
"""
import json
import os
import sys
import time

import zmq

from jupyter_client import KernelManager
from jupyter_client.session import Session

TIMEOUT = 120
cwd = sys.argv[1]
round_trips = int(sys.argv[2]) if len(sys.argv) > 2 else 0
report = {}

km = KernelManager(kernel_name="grid-typescript")
km.start_kernel(cwd=cwd)
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=TIMEOUT)


def run(code, **kwargs):
    """Runs a cell; its iopub messages (in order) and its execute_reply."""
    outputs = []

    def hook(msg):
        t = msg["msg_type"]
        if t in ("stream", "display_data", "update_display_data", "execute_result", "error", "execute_input"):
            outputs.append({"type": t, **msg["content"]})

    reply = kc.execute_interactive(code, timeout=TIMEOUT, output_hook=hook, **kwargs)
    return {"reply": reply["content"], "outputs": outputs}


def shell_request(send):
    msg_id = send()
    while True:
        reply = kc.get_shell_msg(timeout=TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


report["kernel_info"] = kc.kernel_info(reply=True, timeout=TIMEOUT)["content"]

# state across cells, top-level await, TypeScript, the last value, stream output
report["cells"] = [
    run("const x: number = 41;\ninterface P { n: number }\nconst myVariable: P = { n: x };"),
    run("x + 1"),
    run("await new Promise((r) => setTimeout(r, 10));\nconsole.log('awaited', myVariable.n);"),
    # a runtime error on the cell's line 3, after TypeScript-only lines that esbuild strips
    run("type T = { a: number };\nconst t: T = { a: 1 };\n(t as any).missing.call();"),
    run("let y: number = 1;\nlet z = ;"),
    run("display({ 'text/html': '<b>bold</b>' });\ndisplay(grid.tensor('uint8', [8, 8], new Array(64).fill(200)));\n"
        "display('first', { id: 'p' });\ndisplay('second', { id: 'p', update: true });\n"
        "display({ a: [1, 2] }, 'application/json');"),
]

report["complete_member"] = shell_request(lambda: kc.complete("grid.mo", 7))
report["complete_global"] = shell_request(lambda: kc.complete("myVa", 4))
report["inspect"] = shell_request(lambda: kc.inspect("x", 1))
report["inspect_missing"] = shell_request(lambda: kc.inspect("notDefinedAnywhere", 5))
report["is_complete"] = {
    "open": shell_request(lambda: kc.is_complete("function f() {")),
    "done": shell_request(lambda: kc.is_complete("1 + 1")),
    "bad": shell_request(lambda: kc.is_complete("let = = 3")),
}

# silent: nothing on iopub, no execution count taken (store_history false takes none either);
# user_expressions evaluated in the cell's namespace after it ran, without output or a count
report["silent"] = {
    "before": run("'counted'"),
    "silent": run("globalThis.quiet = 7;\nconsole.log('shh');\nquiet", silent=True),
    "no_history": run("quiet * 2", store_history=False),
    "after": run("quiet + 1"),
}
report["user_expressions"] = {
    "ok": run("const ue = { a: 1 };\nconsole.log('ran');",
              user_expressions={"sum": "ue.a + 1", "object": "{ b: ue.a }", "awaited": "await Promise.resolve(ue.a * 3)", "bad": "ue.missing.x"}),
    "failed_cell": run("throw new Error('no');", user_expressions={"sum": "ue.a + 1"}),
    "after": run("'next'"),
}

# a message signed with the wrong key: dropped, so its code never runs
forged = Session(key=b"not-the-kernel-key", session=kc.session.session)
forged.send(kc.shell_channel.socket, "execute_request", {
    "code": "globalThis.forged = 'ran'", "silent": False, "store_history": True,
    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
})
report["after_forged"] = run("typeof globalThis.forged")

# the same signed message twice (a captured message resent): it runs once
replay = kc.session.msg("execute_request", {
    "code": "globalThis.runs = (globalThis.runs ?? 0) + 1", "silent": True, "store_history": False,
    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
})
kc.session.send(kc.shell_channel.socket, replay)
kc.session.send(kc.shell_channel.socket, replay)
report["after_replay"] = run("globalThis.runs")

report["comm_info"] = shell_request(lambda: kc.comm_info())

# stop_on_error: the cell queued behind a failing one is aborted
# The first cell fails once a file appears, made after both requests were handed to zmq; zmq sends
# from its own thread and a queued request is never acknowledged, so the cell then gives the second
# request a generous second to arrive (ipykernel's stop_on_error has the same window).
first = kc.execute("const fs = require('node:fs');\n"
                   "await new Promise((r) => { const w = fs.watch('.', () => { w.close(); r(0); }); if (fs.existsSync('go')) { w.close(); r(0); } });\n"
                   "await new Promise((r) => setTimeout(r, 1000));\n"
                   "throw new Error('first fails');")
second = kc.execute("globalThis.secondRan = true")
open(os.path.join(cwd, "go"), "w").close()
replies = {}
while len(replies) < 2:
    m = kc.get_shell_msg(timeout=TIMEOUT)
    replies[m["parent_header"]["msg_id"]] = m["content"]["status"]
report["stop_on_error"] = [replies[first], replies[second]]


def heartbeat():
    """One heartbeat round trip on a socket of our own: the reply, or None within the timeout."""
    info = km.get_connection_info()
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    sock.connect(f"{info['transport']}://{info['ip']}:{info['hb_port']}")
    try:
        sock.send(b"are you there")
        return sock.recv().decode() if sock.poll(30_000) else None  # generous: an answer takes milliseconds
    finally:
        sock.close()


def interrupt_cell(code, while_running=None):
    """Starts `code`, interrupts it once it printed (so it runs: not still compiling), returns its reply."""
    msg_id = kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    seen = while_running() if while_running else None
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    return {"reply": reply["content"], "while_running": seen}


run("const kept = 'still here';")
# an async cell that listens to grid.signal stops on its own: the kernel keeps its state
report["interrupt_async"] = interrupt_cell("console.log('waiting');\nawait new Promise((_, reject) => grid.signal.addEventListener('abort', () => reject(grid.signal.reason)));")
report["after_interrupt_async"] = run("kept")
# a synchronous loop never yields: the kernel restarts its cell process and says so
report["interrupt_loop"] = interrupt_cell("console.log('spinning');\nwhile (true) {}", heartbeat)
report["after_interrupt_loop"] = run("typeof kept")

# a cell that ends its own process: the cell says so, the next cell gets a fresh one
report["exit_cell"] = run("process.exit(3)")
report["after_exit_cell"] = run("1 + 1")

if round_trips:
    times = []
    for _ in range(round_trips):
        start = time.perf_counter()
        shell_request(lambda: kc.execute("1", store_history=False))
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    report["round_trip_ms"] = {"n": len(times), "p50": times[len(times) // 2], "p90": times[int(len(times) * 0.9)]}



def cell_process():
    """The pid of the process that runs cells (the kernel's child)."""
    return int(run("process.pid")["outputs"][-1]["data"]["text/plain"])


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


# restart through the manager (shutdown_request with restart=True, then a new process)
pid_before = km.provisioner.process.pid
cells_before = cell_process()
km.restart_kernel(now=False)
kc.wait_for_ready(timeout=TIMEOUT)
report["restart"] = {
    "new_process": km.provisioner.process.pid != pid_before,
    "old_cell_process_alive": alive(cells_before),
    "after": run("typeof x"),
}

# shutdown: the kernel answers and exits by itself, its cell process with it
cells = cell_process()
process = km.provisioner.process
kc.shutdown()
reply = kc.get_control_msg(timeout=TIMEOUT) if hasattr(kc, "get_control_msg") else None
report["shutdown_reply"] = reply["content"] if reply else None
report["exit_code"] = process.wait(timeout=TIMEOUT)
report["cell_process_alive"] = alive(cells)
kc.stop_channels()
km.cleanup_resources()

print(json.dumps(report))
