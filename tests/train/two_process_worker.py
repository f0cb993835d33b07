"""One of the two processes of test_loop's multi-host test (run as a script)."""

import json
import sys

from cm3jax.config import load_config
from cm3jax.train.loop import train

if __name__ == "__main__":
    config_arg, workdir, coordinator, process_id, stop_at = sys.argv[1:6]
    overrides = json.loads(sys.argv[6])
    overrides += [f"--config.distributed.coordinator={coordinator}", "--config.distributed.num_processes=2",
                  f"--config.distributed.process_id={process_id}"]
    results = train(load_config(config_arg, overrides), workdir, stop_at_step=int(stop_at), progress=False)
    print("RESULT " + json.dumps({"step": results["step"], "loss": results["loss"]}))
