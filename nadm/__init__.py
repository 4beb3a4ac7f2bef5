"""NADM: Noise-Aware Diffusion Model for landscape-painting video generation.

Error policy (the exceptions live in nadm.errors; nadm.cli maps them to exit codes):

- `NADMError`: something the user can fix -- a bad value, a missing, damaged or foreign file, an unreachable
  model. The message names the value or file and what to do; the CLI prints it as one `error: ...` line and
  exits with code 2, never with a traceback.
- `InvalidRequest(NADMError, ValueError)`: a bad argument value, reachable both from Python (where it is a
  ValueError, the usual type for it) and from the command line (one line, exit 2). Use it wherever a function
  of the public API checks an argument the CLI also passes through.
- `ValueError` alone: a Python caller's misuse that no command can cause (a tensor of the wrong shape, a config
  dataclass given a wrong value); the command layer turns config ValueErrors into NADMError at its boundary.
- `RunFailed`: a valid request whose run failed on its own numbers -- NaN/inf latents in sampling, a diverging
  training loss (`nadm.train.TrainingDiverged`), ranks ending with different weights. One line, exit code 3.
- `assert` states invariants the code itself guarantees (e.g. after a strict check), never input checks.
- A module raises one type for one kind of mistake: never ValueError here and NADMError there for the same
  check.

Exit codes of `nadm`: 0 done, 1 a check that found problems (`nadm data check`) or a failed `nadm selftest`,
2 a mistake the user can fix, 3 a failed run, 130 interrupted.

Imports: a module imports torch, diffusers, transformers, accelerate or an optional dependency inside its
functions only where that buys start-up time for the CLI (or avoids an import cycle), and says so in a comment
at its top; `nadm --help` imports none of them.
"""

__version__ = "0.1.0"
