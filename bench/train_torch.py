# The PyTorch CPU peer of bench/train-throughput.ts: the same MLP training step (forward, softmax
# cross-entropy, backward, optimiser step) on the same shapes, timed the same way (3 warm-up steps, then
# steps until the time budget is spent). Prints one JSON line: seconds per step for SGD and Adam.
# Usage: python3 bench/train_torch.py SIZES BATCH SECONDS THREADS   e.g. 256,512,512,10 128 3 2
# With SECONDS = serve: prints a JSON line of its version, then for each stdin line "sgd|adam SECONDS" times
# that many seconds of steps (models built once, warm) and prints seconds per step, so that the bench can
# interleave its rounds with ours.
import json
import sys
import time

import torch


def main() -> None:
    sizes = [int(s) for s in sys.argv[1].split(',')]
    batch, threads = int(sys.argv[2]), int(sys.argv[4])
    seconds = 0.0 if sys.argv[3] == 'serve' else float(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.rand(batch, sizes[0]) * 2 - 1
    y = torch.arange(batch) % sizes[-1]

    def make_step(make_opt):
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
            if i + 2 < len(sizes):
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers)
        opt = make_opt(model.parameters())
        loss_fn = torch.nn.CrossEntropyLoss()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            loss.item()

        for _ in range(3):
            step()
        return step

    def timed(step, budget: float) -> float:
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < budget or n < 3:
            step()
            n += 1
        return (time.perf_counter() - t0) / n

    blas = next((l.strip() for l in torch.__config__.show().splitlines() if 'BLAS' in l), 'unknown')
    about = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'blas': blas}
    if sys.argv[3] == 'serve':
        steps = {'sgd': make_step(lambda p: torch.optim.SGD(p, lr=0.01)), 'adam': make_step(lambda p: torch.optim.Adam(p, lr=0.01))}
        print(json.dumps(about), flush=True)
        for line in sys.stdin:
            kind, budget = line.split()
            print(json.dumps({'seconds': timed(steps[kind], float(budget))}), flush=True)
        return
    sgd = timed(make_step(lambda p: torch.optim.SGD(p, lr=0.01)), seconds)
    adam = timed(make_step(lambda p: torch.optim.Adam(p, lr=0.01)), seconds)
    print(json.dumps({'sgd': sgd, 'adam': adam, **about}))


main()
