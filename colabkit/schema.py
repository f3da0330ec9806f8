"""The JSON Schema of ``colabkit doctor --json``, and a small validator for it.

colabkit keeps its core dependencies minimal, so instead of ``jsonschema`` this module validates
the subset of JSON Schema the doctor schema uses: ``type`` (one or a list), ``enum``,
``required``, ``properties``, ``additionalProperties: false``, ``items`` and ``minimum``.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

_STRING: dict[str, Any] = {"type": "string"}
_STRINGS: dict[str, Any] = {"type": "array", "items": _STRING}
_NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
_MIB: dict[str, Any] = {"type": ["integer", "null"], "minimum": 0}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly these properties, all required (nullable ones say so)."""
    return {
        "type": "object",
        "required": sorted(properties),
        "additionalProperties": False,
        "properties": properties,
    }


_GPU = _object(
    {
        "index": {"type": "integer", "minimum": 0},
        "name": _STRING,
        "driver_version": _STRING,
        "memory_total_mib": _MIB,
        "memory_used_mib": _MIB,
        "memory_free_mib": _MIB,
        "utilization_pct": _MIB,
    }
)
_FRAMEWORK = _object(
    {
        "name": {"enum": ["tensorflow", "jax", "torch"]},
        "installed": {"type": "boolean"},
        "checked": {"type": "boolean"},
        "version": {"type": ["string", "null"]},
        "gpu_count": {"type": ["integer", "null"], "minimum": 0},
        "devices": _STRINGS,
        "built_with_cuda": {"type": ["boolean", "null"]},
        "error": {"type": ["string", "null"]},
    }
)
_FINDING = _object(
    {
        "severity": {"enum": ["error", "warning", "info"]},
        "code": _STRING,
        "message": _STRING,
        "fix": _STRING,
        "blocks_gpu": {"type": "boolean"},
    }
)

DOCTOR_SCHEMA: dict[str, Any] = _object(
    {
        "schema_version": {"enum": [SCHEMA_VERSION]},
        "colabkit_version": _STRING,
        "checked_at": {"type": "number"},
        "ok": {"type": "boolean"},
        "environment": _object(
            {
                "kind": {"enum": ["colab", "kaggle", "local"]},
                "evidence": _STRINGS,
                "session_start": {"type": "number"},
                "session_start_source": _STRING,
                "session_limit_s": _NUMBER_OR_NULL,
                "time_left_s": _NUMBER_OR_NULL,
                "drive_mounted": {"type": "boolean"},
                "durable_root": _STRING,
                "cache_root": _STRING,
                "staging_root": _STRING,  # deprecated (colabkit 0.1's name of cache_root)
            }
        ),
        "accelerator": _object(
            {
                "gpu_source": {"enum": ["nvidia-smi", "nvml", "none"]},
                "keras_backend": _STRING,
                "gpus": {"type": "array", "items": _GPU},
                "frameworks": {"type": "array", "items": _FRAMEWORK},
                "tpu": _object(
                    {
                        "present": {"type": "boolean"},
                        "runtime": {"enum": ["tpu-vm", "tpu-node", None]},
                        "evidence": _STRINGS,
                    }
                ),
            }
        ),
        "drive": _object(
            {
                "mountpoint": _STRING,
                "status": {"enum": ["not-colab", "not-mounted", "healthy", "stale", "unhealthy"]},
                "free_bytes": {"type": ["integer", "null"], "minimum": 0},
                "total_bytes": {"type": ["integer", "null"], "minimum": 0},
            }
        ),
        "findings": {"type": "array", "items": _FINDING},
    }
)

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def validate(instance: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Returns one message per violation of ``schema`` by ``instance`` (empty when valid)."""
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](instance) for t in allowed):
            return [f"{where}: expected {' or '.join(allowed)}, got {instance!r}"]
    if "enum" in schema and instance not in schema["enum"]:
        return [f"{where}: {instance!r} is not one of {schema['enum']!r}"]
    errors = []
    if "minimum" in schema and _TYPES["number"](instance) and instance < schema["minimum"]:
        errors.append(f"{where}: {instance!r} is below the minimum {schema['minimum']}")
    if isinstance(instance, dict):
        errors += _validate_object(instance, schema, where)
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors += validate(item, schema["items"], f"{where}[{i}]")
    return errors


def _validate_object(instance: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    properties = schema.get("properties", {})
    errors = [
        f"{where}: missing {key!r}" for key in schema.get("required", ()) if key not in instance
    ]
    for key, value in instance.items():
        if key in properties:
            errors += validate(value, properties[key], f"{where}.{key}")
        elif schema.get("additionalProperties") is False:
            errors.append(f"{where}: unexpected property {key!r}")
    return errors
