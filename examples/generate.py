"""Generate the best image for a prompt with a trained policy (or a baseline), and see every step.

    python examples/generate.py "three bottles arranged diagonally on a wooden table, each a different colour" \
        --policy runs/main/maskable-ppo/seed0/policy.json --out runs/generate

Writes final.png, contact_sheet.png (each step with its expert and the critic's feedback) and trace.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro

from agents.pipeline import generate_one


@dataclass(frozen=True)
class Args:
    prompt: tyro.conf.Positional[str] = "two red clocks left of a blue dog on grass"
    policy: str = "fixed"  # a policy.json from `poser train`/`poser main` (or its run folder), or a baseline name
    algo: str = "maskable-ppo"
    seed: int = 0
    out: str = "runs/generate"
    overwrite: bool = False  # replace a previous run's files in `out`


def main(args: Args) -> list[str]:
    paths = generate_one(args.prompt, policy=args.policy, algo=args.algo, seed=args.seed, out=args.out,
                         overwrite=args.overwrite)
    for p in paths:
        print("wrote", p)
    return [str(p) for p in paths]



if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
