"""Do one and two torch threads train the same model? Trains the embedded default's model
(shape and schedule of an environment, on its corpus) for a few steps with one thread, then
with two, in one process, and prints whether the weights are bitwise identical.

    OMP_NUM_THREADS=2 python benchmarks/threads_determinism.py --env seeds --study data/seeds --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="seeds")
    parser.add_argument("--study", type=Path, default=Path("data/seeds"), help="a study folder with its corpus")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    import torch

    from fkr_kedro.parameters import validate_parameters
    from fkr_kedro.pipelines.train.nodes import train_model
    from fkr_kedro.run_config import StudyConfigLoader

    loader = StudyConfigLoader(str(Path.cwd() / "conf"), env=args.env, base_env="base", default_run_env="local")
    params = validate_parameters(loader["parameters"])
    corpus = (args.study / "05_model_input" / "train_corpus.txt").read_text()
    training = dataclasses.replace(params.training, steps=args.steps, log_every=max(args.steps, 1))
    weights = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        model, _, _ = train_model(corpus, params.model_shape, training)
        weights[threads] = {k: v.clone() for k, v in model.model.state_dict().items()}
    same = all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])
    largest = max((weights[1][k] - weights[2][k]).abs().max().item() for k in weights[1])
    print(f"{args.steps} steps ({training.loop} loop), 1 vs 2 threads: bitwise identical weights: {same}; "
          f"largest difference {largest:.3g}")


if __name__ == "__main__":
    main()
