"""``jvae weights``: the pretrained metric networks (LPIPS's VGG16, FID's Inception v3).

Three subcommands over the local weight store of :mod:`jvae.metrics.weights`:

* ``jvae weights list``: each weight set, its state and its file;
* ``jvae weights fetch NAME``: download, verify (SHA-256) and convert a set;
* ``jvae weights convert NAME --backbone FILE [--heads FILE]``: convert
  PyTorch files downloaded by hand (the offline route).

A failure (offline, a missing file) is one line naming the file, the URLs and
the command that fixes it, and exit status 2.
"""

from __future__ import annotations

import argparse

from jvae.app import flags
from jvae.metrics.weights import WEIGHT_SETS, convert, fetch, status, weights_dir, weights_path

__all__ = ["MODE"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    names = sorted(WEIGHT_SETS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,fetch,convert}",
                                     help="What to do: list the weight sets, fetch one, or convert files "
                                          "downloaded by hand.")
    commands.add_parser("list", help="Each weight set, its state (installed or missing) and its file.",
                        description="Lists the weight sets, their state and their files.")
    get = commands.add_parser("fetch", help="Download, verify and convert a weight set.",
                              description="Downloads a weight set's PyTorch files, checks their SHA-256 "
                                          "and converts them (nothing is done if it is installed).")
    get.add_argument("name", choices=names, help="The weight set.")
    get.add_argument("--force", action="store_true", help="Download and convert again even if installed.")
    get.add_argument("--keep-downloads", action="store_true",
                     help="Keep the downloaded .pth files (in <weights dir>/downloads).")
    conv = commands.add_parser("convert", help="Convert PyTorch files downloaded by hand.",
                               description="Converts local PyTorch files into a weight set (offline).")
    conv.add_argument("name", choices=names, help="The weight set.")
    conv.add_argument("--backbone", required=True, metavar="FILE",
                      help="The network's .pth: vgg16-397923af.pth for lpips, "
                           "pt_inception-2015-12-05-6726825d.pth for inception.")
    conv.add_argument("--heads", default=None, metavar="FILE",
                      help="lpips' vgg.pth (lpips only; default: the installed lpips package's copy).")
    conv.add_argument("--check-digest", action="store_true",
                      help="Refuse files whose SHA-256 differs from the published one.")


def _run(args: argparse.Namespace) -> int:
    if args.command == "list":
        print(f"weights directory: {weights_dir()}")
        width = max(map(len, WEIGHT_SETS))
        for name, ws in WEIGHT_SETS.items():
            print(f"{name.ljust(width)}  {status(name)}  {weights_path(name)}  ({ws.summary})")
        return 0
    if args.command == "fetch":
        path = fetch(args.name, force=args.force, keep_downloads=args.keep_downloads,
                     report=lambda line: print(line, flush=True))
    else:
        path = convert(args.name, backbone=args.backbone, heads=args.heads, check_digest=args.check_digest)
    print(f"{args.name} weights: {path}")
    return 0


MODE = flags.Mode("weights", "Download, convert and list the pretrained networks of the metrics "
                  "(LPIPS, FID).", _add_arguments, _run)
