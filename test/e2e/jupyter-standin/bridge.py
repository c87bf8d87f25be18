# The stand-in Jupyter extension's kernel: a real ipykernel (the python3 kernelspec) started and driven
# by jupyter_client, one per notebook. JSON lines on stdin: {"id", "code", "store_history"} to execute,
# {"interrupt": true}; on stdout: {"ready": true}, then per request its iopub outputs
# {"id", "output": <the Jupyter message content + output_type>} and {"id", "done": true, "status",
# "execution_count"}. Requests run one after another, as the kernel's shell channel runs them.
import json
import queue
import sys
import threading

from jupyter_client.manager import start_new_kernel

OUTPUT_TYPES = {'stream', 'display_data', 'execute_result', 'error', 'update_display_data'}


def send(message):
    sys.stdout.write(json.dumps(message) + '\n')
    sys.stdout.flush()


def main():
    km, kc = start_new_kernel(kernel_name=sys.argv[1] if len(sys.argv) > 1 else 'python3')
    requests = queue.Queue()

    def read():
        for line in sys.stdin:
            message = json.loads(line)
            if message.get('interrupt'):
                km.interrupt_kernel()
            else:
                requests.put(message)
        requests.put(None)

    threading.Thread(target=read, daemon=True).start()
    send({'ready': True})
    try:
        while True:
            request = requests.get()
            if request is None:
                break
            msg_id = kc.execute(request['code'], store_history=request.get('store_history', True))
            while True:
                msg = kc.get_iopub_msg()
                if msg['parent_header'].get('msg_id') != msg_id:
                    continue
                kind = msg['msg_type']
                if kind in OUTPUT_TYPES:
                    send({'id': request['id'], 'output': dict(msg['content'], output_type=kind)})
                elif kind == 'status' and msg['content']['execution_state'] == 'idle':
                    break
            reply = kc.get_shell_msg()
            while reply['parent_header'].get('msg_id') != msg_id:
                reply = kc.get_shell_msg()
            send({'id': request['id'], 'done': True, 'status': reply['content']['status'],
                  'execution_count': reply['content'].get('execution_count')})
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


main()
