"""`python -m sweeps.cache`: show, or clear, the cache of prepared folds (docs: your own data).

    python -m sweeps.cache [--clear]
"""

from __future__ import annotations

import argparse
import shutil
import time

from sweeps import _args


def parser() -> argparse.ArgumentParser:
    """The command's arguments (the docs' command lines are checked against it)."""
    p = argparse.ArgumentParser(prog="python -m sweeps.cache",
                                description="Show, or clear, the cache of prepared folds (docs: your own data).")
    p.add_argument("--clear", action="store_true", help="delete every cached entry")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The work's imports come after the arguments are read: --help and a wrong flag answer at once,
    # without loading torch and scikit-learn (seconds). A door is imported by nothing: no cycle hides here.
    from sweeps import _cli
    from sweeps.data.cache import cache_dir, entries, folder_size, limit_bytes, partials
    def body() -> int:
        root = cache_dir()
        if root is None:
            print("The cache is off (SWEEPS_CACHE_DIR=off).")
            return 0
        limit = limit_bytes()
        found, unfinished = entries(root), partials(root)
        left = [folder for folder, gone in unfinished if gone]
        total = sum(size for _, size, _ in found)
        if args.clear:
            for entry, _, _ in found:
                shutil.rmtree(entry, ignore_errors=True)
            for folder in left:  # left by a killed process; one being written now is left alone
                shutil.rmtree(folder, ignore_errors=True)
            print(f"Cleared {len(found)} entries ({total / 2**20:.1f} MiB) and {len(left)} unfinished "
                  f"folder(s) left by stopped processes from {root}.")
            return 0
        print(f"Cache: {root}: {len(found)} entries, {total / 2**20:.1f} MiB "
              f"(limit {limit / 2**30:.1f} GiB, SWEEPS_CACHE_GB; least recently used go first).")
        for entry, size, used in reversed(found):
            print(f"  {entry.name}  {size / 2**20:9.1f} MiB  last used "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(used))}")
        if unfinished:
            print(f"  {len(unfinished)} unfinished folder(s), {len(left)} of them left by stopped processes "
                  f"({sum(folder_size(f) for f, _ in unfinished) / 2**20:.1f} MiB; --clear removes those)")
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    _args.leave(main())
