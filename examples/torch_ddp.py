"""Train an MLP with PyTorch DistributedDataParallel on an hpcprep dataset.

Launch it with torchrun or with mpiexec (docs/train.md, "Training with PyTorch")::

    torchrun --standalone --nproc_per_node=2 examples/torch_ddp.py out --split train --epochs 3
    mpiexec -n 2 python examples/torch_ddp.py out --split train --epochs 3

gloo on CPU, nccl where each rank has a GPU (GPU = local rank). Every rank yields the
same number of batches (``remainder="pad"``), so no rank waits in an all-reduce that
never comes. ``--checkpoint PATH`` saves the model, the optimizer and the loader's
position after every ``--save-every`` steps and at the end of each epoch; started again
with the same PATH it resumes exactly where it stopped, mid-epoch included.
"""

import argparse
import json
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from hpcprep.loader import open_dataset
from hpcprep.train.torch_data import init_distributed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="an hpcprep dataset folder")
    p.add_argument("--split", default=None, help="split of a split dataset (e.g. train)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256, help="rows per rank and step")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per rank")
    p.add_argument("--checkpoint", default=None, help="save here; resume from here if it exists")
    p.add_argument("--save-every", type=int, default=0, help="also save every N steps (0: epochs only)")
    p.add_argument("--history", default=None, help="rank 0 appends one JSON line per epoch here")
    return p.parse_args(argv)


def launch():
    """``(comm, rank, world, device)``: MPI when not started by torchrun."""
    comm = None
    if not ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    rank, world = init_distributed(comm)
    device = torch.device("cpu")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("MPI_LOCALRANKID", rank)))
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return comm, rank, world, device


def main(argv=None):
    args = parse_args(argv)
    comm, rank, world, device = launch()
    ds = open_dataset(args.dataset, split=args.split, comm=comm)
    classes = 2
    if ds.has_labels:
        classes = max(2, int(ds.read_labels(0, ds.rows).max()) + 1) if ds.rows else 2
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(ds.n_features, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, classes)).to(device)
    model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    batches = ds.torch(args.batch_size, shuffle_seed=args.seed, remainder="pad")
    loader = batches.loader(num_workers=args.workers, pin_memory=device.type == "cuda")
    if args.checkpoint and os.path.exists(args.checkpoint):
        ck = torch.load(args.checkpoint, map_location=device, weights_only=False)
        model.module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        loader.load_state_dict(ck["loader"][rank])

    def save():
        states = [None] * world
        dist.all_gather_object(states, loader.state_dict())
        if rank == 0:
            tmp = f"{args.checkpoint}.tmp"
            torch.save({"model": model.module.state_dict(), "optimizer": opt.state_dict(),
                        "loader": states}, tmp)
            os.replace(tmp, args.checkpoint)

    for epoch in range(loader.epoch, args.epochs):
        loader.set_epoch(epoch)          # keeps a resumed position within its epoch
        total, steps = torch.zeros(2, dtype=torch.float64, device=device), 0
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total += torch.stack([loss.detach().double() * len(y), torch.tensor(len(y), device=device)])
            steps += 1
            if args.checkpoint and args.save_every and steps % args.save_every == 0:
                save()
        dist.all_reduce(total)
        counts = [0] * world
        dist.all_gather_object(counts, steps)
        loader.set_epoch(epoch + 1)
        if args.checkpoint:
            save()
        if rank == 0:
            rec = {"epoch": epoch, "loss": float(total[0] / max(total[1], 1)),
                   "rows": int(total[1]), "batches_per_rank": counts}
            print(json.dumps(rec), flush=True)
            if args.history:
                with open(args.history, "a") as f:
                    f.write(json.dumps(rec) + "\n")
    ds.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
