"""A deployment that fails at the stack's start says why in the stack's own error, not only in Ray's logs."""

from __future__ import annotations

from types import SimpleNamespace

from service.stack.supervisor import deployment_failures

TRACEBACK = """The deployment failed to start 3 times in a row. See controller logs for details. Error:
ray::ServeReplica:tuneserve:vllm:Tiny.initialize_and_get_metadata() (pid=4561)
  File "/x/ray/llm/_internal/serve/engines/vllm/vllm_engine.py", line 120, in start
    raise RuntimeError(f"Failed to create vLLM engine config: {e}") from None
RuntimeError: Failed to create vLLM engine config: 1 validation error for ModelConfig
  Value error, User-specified max_model_len (4096) is greater than the derived max_model_len (2048).
    For further information visit https://errors.pydantic.dev/2.14/v/value_error"""


def test_each_failed_deployment_is_named_with_the_exception_that_ended_it() -> None:
    app = SimpleNamespace(
        deployments={
            "api": SimpleNamespace(status="DeploymentStatus.HEALTHY", message=""),
            "vllm:Tiny": SimpleNamespace(status="DeploymentStatus.DEPLOY_FAILED", message=TRACEBACK),
        }
    )
    assert deployment_failures(app) == [
        "vllm:Tiny: RuntimeError: Failed to create vLLM engine config: 1 validation error for ModelConfig "
        "Value error, User-specified max_model_len (4096) is greater than the derived max_model_len (2048)."
    ]
    assert deployment_failures(None) == []
