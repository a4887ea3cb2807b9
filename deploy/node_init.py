"""Ray Serve LLM's node initialization, for base models that are folders on the nodes already.

Before a vLLM replica starts its engine, Ray Serve LLM runs a Ray task on every node of the replica's
placement group to download the model from a hub or a bucket. The service serves local HF folders only
(`TUNESERVE_BASE_MODELS`), where that task downloads nothing; but it still starts a Ray worker that imports
torch and transformers (~800 MB resident) and lingers until Ray retires idle workers (a minute here,
`service.stack.supervisor.IDLE_WORKERS_ENV`). Measured on 2 cores: the bursts served during that minute
ran ~20 % slower (bench/RESULTS.md, serving, fourteenth session). This callback skips the task and does
its one side effect in the replica.
"""

from __future__ import annotations

import os

from ray.llm._internal.common.callbacks.base import CallbackBase

CALLBACK_CLASS = "deploy.node_init:LocalModelCallback"  # LLMConfig.callback_config names it by path


class LocalModelCallback(CallbackBase):
    async def on_before_node_init(self) -> None:
        import torch

        # The download task's only effect for a local folder: torch cannot create its kernels cache
        # directory when the parent is missing (Ray Serve LLM's download_model_files works around it).
        os.makedirs(os.path.join(torch.hub._get_torch_home(), "kernels"), exist_ok=True)
        self.ctx.run_init_node = False
