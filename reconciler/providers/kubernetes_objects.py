"""A resolved Score workload as Kubernetes objects, the way score-k8s renders it.

The ``manifests`` target (and later the ``kubernetes`` target) calls ``render_workload`` for each
workload and ``render_resources`` for what its resources' provisioners rendered, then
``render_documents`` for the bytes it commits. Pure: values in, values out, no I/O; the same
request always gives the same objects, the same names and the same bytes.

Where we differ from score-k8s, on purpose (docs/manifests.md lists it for users):

- a file is a ConfigMap key mounted with ``subPath`` at its own path (score-k8s mounts the parent
  folder through a projected volume), so files never hide what the image keeps beside them;
- ``mode`` is octal, as Score writes it (``"0600"``);
- plain variable values are escaped for Kubernetes' ``$(VAR)`` expansion, so they arrive as
  written;
- a file mixing text and secrets is rendered in the cluster by an ExternalSecret template
  (score-k8s refuses it), and every ``Secret`` a provisioner rendered becomes an ExternalSecret:
  no secret value is ever written to Git.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from reconciler.catalogue import Code
from reconciler.desired.identity import parse as parse_uid
from reconciler.desired.secrets import MARK_CLOSE, MARK_OPEN, embed, is_ref, parse_ref, refs_in
from reconciler.desired.templating import k8s_name
from reconciler.providers.base import DriverError, WorkloadRequest

MANAGER: Final = "score-reconciler"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_ENVIRONMENT: Final = "reconciler.score.dev/environment"
ANNOTATION_SOURCE: Final = "reconciler.score.dev/source-file"
ANNOTATION_FILES: Final = "reconciler.score.dev/files-sha256"
SERVICE_NAME_ANNOTATION: Final = "k8s.score.dev/service-name"
KIND_ANNOTATION: Final = "k8s.score.dev/kind"
SCORE_K8S_PREFIX: Final = "k8s.score.dev/"

EXTERNAL_SECRETS_API: Final = "external-secrets.io/v1"
SECRET_STORE: Final = {"kind": "ClusterSecretStore", "name": MANAGER}
"""The store every ExternalSecret reads from; the cluster's operator must define it."""

KIND_ORDER: Final = (
    "Namespace",
    "ServiceAccount",
    "ExternalSecret",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Service",
    "StatefulSet",
    "Deployment",
)
"""Documents are written in apply order: what others reference first; other kinds after."""

MAX_NAME: Final = 63
_NOT_NAME: Final = re.compile(r"[^a-z0-9-]+")
_SECRET_KEY: Final = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_DOLLAR: Final = re.compile(r"\$(?=[$(])")
# Plain scalars that YAML 1.1 readers (kubectl, Argo CD, Flux) would take for something else.
_YAML11_WORDS: Final = re.compile(r"^(?:[yYnN~=]|<<|yes|no|true|false|on|off|null)$", re.IGNORECASE)
_YAML11_NUMBER: Final = re.compile(
    r"^[-+]?(?:0x[0-9a-f_]+|0b[01_]+|0o[0-7_]+|[0-9][0-9_]*(?::[0-5]?[0-9])*(?:\.[0-9_]*)?(?:e[-+]?[0-9]+)?"
    r"|\.[0-9_]+(?:e[-+]?[0-9]+)?|\.inf|\.nan)$",
    re.IGNORECASE,
)


def render_error(message: str) -> DriverError:
    """A render failure: the workload or provisioner must change, so retrying cannot help."""
    return DriverError(Code.MANIFEST_RENDER_FAILED, message)


# -- names -------------------------------------------------------------------------------------


def short_hash(*parts: str, length: int = 8) -> str:
    """Hex of SHA-256 over the parts (NUL-separated, so ``("a", "bc")`` ≠ ``("ab", "c")``)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def safe_name(*parts: str) -> str:
    """An RFC 1123 label from ``parts`` joined by ``-``: as is when it already is one, else
    cleaned and cut to 54 characters plus a hash of the parts, so two inputs never share it."""
    joined = "-".join(parts)
    cleaned = _NOT_NAME.sub("-", joined.lower()).strip("-")
    if cleaned == joined and 0 < len(joined) <= MAX_NAME:
        return joined
    head = cleaned[:54].rstrip("-")
    digest = short_hash(*parts)
    return f"{head}-{digest}" if head else digest


@dataclass(frozen=True, slots=True)
class SecretKey:
    """Where a secret output lives in the cluster: key ``key`` of the Secret ``name``."""

    name: str
    key: str


def secret_key_for(ref: str) -> SecretKey:
    """THE naming rule for secret outputs: ``secret://<env>/<type>.<class>#<id>/<key>`` lives in
    the Secret ``k8s_name(type, class, id)`` (the name provisioner templates give their objects)
    under key ``<key>``. The environment is not part of the name: one namespace per environment.
    """
    try:
        _, uid, key = parse_ref(ref)
        resource = parse_uid(uid)
    except ValueError as exc:
        raise render_error(f"malformed secret reference: {exc}") from None
    if not _SECRET_KEY.match(key):
        raise render_error(f"resource '{uid}': output '{key}' cannot be a Secret key")
    return SecretKey(_resource_name(resource.type, resource.class_, resource.id), key)


@functools.lru_cache(maxsize=4096)
def _resource_name(type_: str, class_: str, id_: str) -> str:
    """``k8s_name(type, class, id)``, remembered: every workload using a resource names it
    again (its Secret for each variable, the owners of its resources' Secrets), and the name
    costs two digests and a JSON text."""
    return k8s_name(type_, class_, id_)


def remote_ref(ref: str) -> dict[str, str]:
    """Where the secret store keeps a reference's value, as an ExternalSecret ``remoteRef``:
    the secret ``<env>/<uid>``, property ``<key>``."""
    environment, uid, key = parse_ref(ref)
    return {"key": f"{environment}/{uid}", "property": key}


# -- the workload ------------------------------------------------------------------------------


@dataclass
class _Pod:
    """What the containers add to the pod and beside it, collected while they are rendered."""

    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)
    file_parts: list[str] = field(default_factory=list)


def render_workload(request: WorkloadRequest) -> list[dict[str, Any]]:
    """The Deployment, its Service, ConfigMaps, claims and ExternalSecrets for one workload.

    Raises ``DriverError`` (``MANIFEST_RENDER_FAILED``) with the path of the offending value.
    """
    spec = request.spec
    metadata = spec.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    kind = annotations.get(KIND_ANNOTATION, "Deployment")
    if kind != "Deployment":
        raise render_error(f"metadata.annotations.{KIND_ANNOTATION}: '{kind}' is not supported")
    labels = _labels(request)
    pod = _Pod()
    containers = [
        _container(request, name, container, labels, pod)
        for name, container in sorted((spec.get("containers") or {}).items())
    ]
    objects = [*pod.objects, _deployment(request, labels, containers, pod)]
    service = _service(request, labels)
    if service is not None:
        objects.append(service)
    _refuse_markers(objects, f"workload '{request.name}'")
    return objects


def _labels(request: WorkloadRequest) -> dict[str, str]:
    return {
        LABEL_NAME: request.name,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_ENVIRONMENT: request.environment,
    }


def _meta(
    name: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _annotations(request: WorkloadRequest) -> dict[str, str]:
    """The workload's annotations, less score-k8s's own (they steer rendering, not the cluster)."""
    given = (request.spec.get("metadata") or {}).get("annotations") or {}
    out = {k: str(v) for k, v in sorted(given.items()) if not k.startswith(SCORE_K8S_PREFIX)}
    if request.file:
        out[ANNOTATION_SOURCE] = request.file
    return out


def _deployment(
    request: WorkloadRequest,
    labels: Mapping[str, str],
    containers: list[dict[str, Any]],
    pod: _Pod,
) -> dict[str, Any]:
    annotations = _annotations(request)
    pod_annotations = dict(annotations)
    if pod.file_parts:
        # A changed file keeps its ConfigMap's name; this makes the pods roll all the same.
        pod_annotations[ANNOTATION_FILES] = short_hash(*pod.file_parts, length=64)
    pod_spec: dict[str, Any] = {"containers": containers}
    if pod.volumes:
        pod_spec["volumes"] = [pod.volumes[name] for name in sorted(pod.volumes)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(request.name, labels, annotations),
        "spec": {
            "selector": {"matchLabels": {LABEL_NAME: request.name}},
            "template": {"metadata": _meta_pod(labels, pod_annotations), "spec": pod_spec},
        },
    }


def _meta_pod(labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def service_name(request: WorkloadRequest) -> str:
    """The workload's Service: its name, or the ``k8s.score.dev/service-name`` annotation."""
    annotations = (request.spec.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(SERVICE_NAME_ANNOTATION, request.name))


def _service(request: WorkloadRequest, labels: Mapping[str, str]) -> dict[str, Any] | None:
    ports = ((request.spec.get("service") or {}).get("ports")) or {}
    if not ports:
        return None
    listed = [
        {
            "name": name,
            "port": port["port"],
            "protocol": str(port.get("protocol") or "TCP").upper(),
            "targetPort": port.get("targetPort") or port["port"],
        }
        for name, port in sorted(ports.items())
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(service_name(request), labels, _annotations(request)),
        "spec": {"type": "ClusterIP", "selector": {LABEL_NAME: request.name}, "ports": listed},
    }


def _container(
    request: WorkloadRequest,
    name: str,
    container: Mapping[str, Any],
    labels: Mapping[str, str],
    pod: _Pod,
) -> dict[str, Any]:
    where = f"containers.{name}"
    out: dict[str, Any] = {"name": name, "image": container["image"]}
    for key in ("command", "args"):  # as written: score-k8s substitutes neither
        if container.get(key):
            out[key] = list(container[key])
    env = render_env(container.get("variables") or {}, f"{where}.variables")
    if env:
        out["env"] = env
    resources = {
        kind: {k: str(v) for k, v in sorted(values.items())}
        for kind, values in sorted((container.get("resources") or {}).items())
        if values
    }
    if resources:
        out["resources"] = resources
    for probe in ("livenessProbe", "readinessProbe"):
        if container.get(probe):
            out[probe] = _probe(container[probe], f"{where}.{probe}")
    mounts = [
        *_volume_mounts(request, container.get("volumes") or {}, where, labels, pod),
        *_file_mounts(request, name, container.get("files") or {}, where, labels, pod),
    ]
    if mounts:
        out["volumeMounts"] = sorted(mounts, key=lambda m: (m["mountPath"], m["name"]))
    return out


def _probe(probe: Mapping[str, Any], where: str) -> dict[str, Any]:
    """httpGet wins when a probe gives both, as in score-k8s (Kubernetes takes one handler)."""
    http = probe.get("httpGet")
    if http:
        action: dict[str, Any] = {"path": http.get("path", "/"), "port": http["port"]}
        if http.get("host"):
            action["host"] = http["host"]
        if http.get("scheme"):
            action["scheme"] = http["scheme"]
        if http.get("httpHeaders"):
            action["httpHeaders"] = [
                {"name": h["name"], "value": h["value"]} for h in http["httpHeaders"]
            ]
        return {"httpGet": action}
    if probe.get("exec"):
        return {"exec": {"command": list(probe["exec"]["command"])}}
    raise render_error(f"{where}: either httpGet or exec must be given")


# -- variables ---------------------------------------------------------------------------------


def escape_env(value: str) -> str:
    """``value`` escaped so that Kubernetes' ``$(VAR)`` expansion gives it back unchanged."""
    return _DOLLAR.sub("$$", value)


def helper_env_name(secret: SecretKey) -> str:
    """The variable holding one secret for a longer value to reference as ``$(NAME)``."""
    return f"__secret_{short_hash(secret.name, secret.key, length=12)}"


def _split_marked(text: str) -> list[str | SecretKey]:
    """``text`` as literal pieces and the secrets between them, in order."""
    pieces: list[str | SecretKey] = []
    rest = text
    for ref in refs_in(text):
        before, _, rest = rest.partition(embed(ref) if not is_ref(text) else ref)
        pieces.extend([before, secret_key_for(ref)])
    pieces.append(rest)
    return pieces


def render_env(variables: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """Variables as ``env``: a value that is one secret reads it from its Secret; a value with
    secrets inside references helper variables holding them (listed first, since Kubernetes only
    expands variables defined earlier); any other value is escaped and kept as is."""
    helpers: dict[str, dict[str, Any]] = {}
    env: list[dict[str, Any]] = []
    for name, raw in sorted(variables.items()):
        value = str(raw)
        pieces = _split_marked(value)
        if len(pieces) == 1:
            env.append({"name": name, "value": escape_env(value)})
        elif pieces[0] == "" and pieces[2] == "" and len(pieces) == 3:
            env.append({"name": name, "valueFrom": _key_ref(pieces[1])})
        else:
            text = []
            for piece in pieces:
                if isinstance(piece, SecretKey):
                    helper = helper_env_name(piece)
                    helpers[helper] = {"name": helper, "valueFrom": _key_ref(piece)}
                    text.append(f"$({helper})")
                else:
                    text.append(escape_env(piece))
            env.append({"name": name, "value": "".join(text)})
    spelled = str(env)
    if MARK_OPEN in spelled or MARK_CLOSE in spelled:
        raise render_error(f"{where}: a secret marker is malformed")
    return [helpers[name] for name in sorted(helpers)] + env


def _key_ref(piece: str | SecretKey) -> dict[str, Any]:
    assert isinstance(piece, SecretKey)
    return {"secretKeyRef": {"name": piece.name, "key": piece.key}}


# -- volumes -----------------------------------------------------------------------------------


def _volume_mounts(
    request: WorkloadRequest,
    volumes: Mapping[str, Any],
    where: str,
    labels: Mapping[str, str],
    pod: _Pod,
) -> list[dict[str, Any]]:
    names_by_uid = {uid: name for name, uid in request.resources.items()}
    mounts = []
    for target, volume in sorted(volumes.items()):
        here = f"{where}.volumes.{target}.source"
        uid = str(volume.get("source", ""))
        outputs = request.resource_outputs.get(names_by_uid.get(uid, uid))
        if outputs is None:
            raise render_error(f"{here}: resource '{uid}' has no outputs")
        name = f"vol-{short_hash(uid, length=10)}"
        pod.volumes[name] = {
            "name": name,
            **_volume_source(request, uid, outputs, here, labels, pod),
        }
        mount: dict[str, Any] = {"name": name, "mountPath": target}
        if volume.get("path"):
            mount["subPath"] = str(volume["path"]).lstrip("/")  # Kubernetes wants it relative
        if volume.get("readOnly"):
            mount["readOnly"] = True
        mounts.append(mount)
    return mounts


def _volume_source(
    request: WorkloadRequest,
    uid: str,
    outputs: Mapping[str, Any],
    where: str,
    labels: Mapping[str, str],
    pod: _Pod,
) -> dict[str, Any]:
    """A resource's ``source`` output is a VolumeSource; ``claimSpec`` becomes a claim of its own
    (named after the workload and resource, so a re-render binds the same volume)."""
    unknown = sorted(set(outputs) - {"source", "claimSpec"})
    if unknown or ("source" in outputs) == ("claimSpec" in outputs):
        raise render_error(
            f"{where}: resource '{uid}' must output exactly one of 'source' or 'claimSpec'"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    if "source" in outputs:
        source = outputs["source"]
        if not isinstance(source, Mapping) or not source:
            raise render_error(f"{where}: resource '{uid}' output 'source' is empty")
        return dict(source)
    claim = safe_name(request.name, k8s_name(uid))
    if not any(o["metadata"]["name"] == claim for o in pod.objects):
        pod.objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": _meta(claim, labels),
                "spec": dict(outputs["claimSpec"]),
            }
        )
    return {"persistentVolumeClaim": {"claimName": claim}}


# -- files -------------------------------------------------------------------------------------


def file_key(target: str) -> str:
    """The ConfigMap or Secret key of a file: its path, readable, with a hash to stay unique."""
    readable = re.sub(r"[^-._a-zA-Z0-9]+", "_", target.strip("/"))[:200] or "file"
    return f"{readable}-{short_hash(target, length=6)}"


def _file_mounts(
    request: WorkloadRequest,
    container: str,
    files: Mapping[str, Any],
    where: str,
    labels: Mapping[str, str],
    pod: _Pod,
) -> list[dict[str, Any]]:
    config = safe_name(request.name, container, "files")
    volume = f"files-{short_hash(container, length=10)}"
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    items: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for target, spec in sorted(files.items()):
        here = f"{where}.files.{target}"
        key = file_key(target)
        item = {"key": key, "path": key, **_mode(spec.get("mode"), here)}
        pod.file_parts.extend([container, target, repr(sorted(spec.items()))])
        if "binaryContent" in spec:
            binary[key] = _base64(spec["binaryContent"], here)
        elif isinstance(spec.get("content"), str):
            secret = _secret_file(request, container, target, spec["content"], labels, pod)
            if secret is not None:
                name = f"secret-{short_hash(container, target, length=10)}"
                source = {"secretName": secret.name, "items": [{**item, "key": secret.key}]}
                pod.volumes[name] = {"name": name, "secret": source}
                mounts.append(_mount(name, target, key))
                continue
            data[key] = spec["content"]
        else:
            raise render_error(f"{here}: needs 'content' or 'binaryContent'")
        items.append(item)
        mounts.append(_mount(volume, target, key))
    if items:
        configmap: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap"}
        configmap["metadata"] = _meta(config, labels)
        if data:
            configmap["data"] = data
        if binary:
            configmap["binaryData"] = binary
        pod.objects.append(configmap)
        pod.volumes[volume] = {"name": volume, "configMap": {"name": config, "items": items}}
    return mounts


def _mount(volume: str, target: str, key: str) -> dict[str, Any]:
    return {"name": volume, "mountPath": target, "subPath": key, "readOnly": True}


def _mode(mode: object, where: str) -> dict[str, int]:
    if mode is None:
        return {}
    try:
        value = int(str(mode), 8)
    except ValueError:
        raise render_error(f"{where}.mode: '{mode}' is not an octal mode like 0644") from None
    if not 0 <= value <= 0o777:
        raise render_error(f"{where}.mode: '{mode}' is out of range (0000-0777)")
    return {"mode": value}


def _base64(text: object, where: str) -> str:
    try:
        return base64.b64encode(base64.b64decode(str(text), validate=True)).decode()
    except (binascii.Error, ValueError):
        raise render_error(f"{where}.binaryContent: not valid base64") from None


def _secret_file(
    request: WorkloadRequest,
    container: str,
    target: str,
    content: str,
    labels: Mapping[str, str],
    pod: _Pod,
) -> SecretKey | None:
    """The Secret and key holding a file with secrets in it; None for a plain file.

    A file that is one secret reads the provisioner's Secret directly; a file mixing text and
    secrets gets an ExternalSecret that renders it in the cluster from the secret store.
    """
    refs = refs_in(content)
    if not refs:
        return None
    pieces = _split_marked(content)
    if len(pieces) == 3 and pieces[0] == "" and pieces[2] == "":
        return secret_key_for(refs[0])
    name = safe_name(request.name, container, short_hash(target))
    data = {f"s{i}": ref for i, ref in enumerate(dict.fromkeys(refs))}
    slots = {ref: key for key, ref in data.items()}
    text = []
    for piece, ref in zip(pieces[::2], [*refs, None], strict=True):
        assert isinstance(piece, str)
        text.append(piece.replace("{{", '{{ "{{" }}'))  # literal text, not a template action
        if ref is not None:
            text.append("{{ ." + slots[ref] + " }}")
    key = file_key(target)
    pod.objects.append(external_secret(name, labels, data, template={key: "".join(text)}))
    return SecretKey(name, key)


def external_secret(
    name: str,
    labels: Mapping[str, str],
    data: Mapping[str, str],
    *,
    template: Mapping[str, str] | None = None,
    secret_type: str | None = None,
) -> dict[str, Any]:
    """An ExternalSecret creating the Secret ``name`` from the store: ``data`` maps each of its
    keys to a ``secret://`` reference; ``template`` (Go template text) builds keys from them."""
    target: dict[str, Any] = {"name": name, "creationPolicy": "Owner"}
    if template or secret_type:
        shape: dict[str, Any] = {"engineVersion": "v2"}
        if secret_type:
            shape["type"] = secret_type
        if template:
            shape["data"] = dict(template)
        target["template"] = shape
    return {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "ExternalSecret",
        "metadata": _meta(name, labels),
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": dict(SECRET_STORE),
            "target": target,
            "data": [
                {"secretKey": key, "remoteRef": remote_ref(ref)}
                for key, ref in sorted(data.items())
            ],
        },
    }


# -- resources ---------------------------------------------------------------------------------


def render_resources(request: WorkloadRequest) -> list[dict[str, Any]]:
    """The objects the workload's resources' provisioners rendered, safe to commit.

    A ``v1`` Secret becomes an ExternalSecret of the same name: each key reads the secret
    reference it holds, or, for a value rendered in plain text, the reference of the resource
    whose Secret it is (named by ``secret_key_for``'s rule). Values never reach the output.
    """
    owners: dict[str, str] = {}
    for uid in sorted(set(request.resources.values())):
        try:
            resource = parse_uid(uid)
        except ValueError:
            continue
        owners[_resource_name(resource.type, resource.class_, resource.id)] = uid
    out = []
    for obj in request.resource_manifests:
        if obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1":
            out.append(_secret_as_external(request, obj, owners))
        else:
            out.append(dict(obj))
    _refuse_markers(out, f"resources of workload '{request.name}'")
    return out


def _secret_as_external(
    request: WorkloadRequest, obj: Mapping[str, Any], owners: Mapping[str, str]
) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    values = {**(obj.get("data") or {}), **(obj.get("stringData") or {})}
    data: dict[str, str] = {}
    for key, value in sorted(values.items()):
        refs = refs_in(str(value))
        if len(refs) == 1 and str(value) in (refs[0], embed(refs[0])):
            data[key] = refs[0]
        elif name in owners:
            data[key] = f"secret://{request.environment}/{owners[name]}/{key}"
        else:
            raise render_error(
                f"Secret '{name}' key '{key}': its value must be a secret output of the resource "
                "whose Secret it is, so that it can be read from the secret store"
            )
    secret_type = obj.get("type")
    return external_secret(
        name,
        meta.get("labels") or {},
        data,
        secret_type=None if secret_type in (None, "Opaque") else str(secret_type),
    )


def _refuse_markers(objects: Sequence[Mapping[str, Any]], what: str) -> None:
    """The last guard: a marker or reference left anywhere means a secret would be written.

    An object whose JSON text holds neither marker nor ``"secret://`` holds none in any key or
    string: JSON writes the markers' characters as they are (it escapes only quotes,
    backslashes and control characters), and a string starting with a reference starts so in
    it. Only an object that may hold one (or that is not plain JSON) is walked string by
    string, so the guard costs one C-encoded text per object instead of a generator per value.
    """
    for obj in objects:
        if not _may_hold_marker(obj):
            continue
        for text in _strings(obj):
            if MARK_OPEN in text or MARK_CLOSE in text or text.startswith("secret://"):
                if obj.get("kind") == "ExternalSecret":
                    continue
                raise render_error(f"{what}: a secret would be written in {obj.get('kind')}")


def _may_hold_marker(obj: Mapping[str, Any]) -> bool:
    try:
        text = json.dumps(obj, ensure_ascii=False, check_circular=False)
    except (TypeError, ValueError):  # not plain JSON: walk it
        return True
    return MARK_OPEN in text or MARK_CLOSE in text or '"secret://' in text


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


# -- YAML --------------------------------------------------------------------------------------

_TOP: Final = ("apiVersion", "kind", "metadata", "spec")


def sort_key(obj: Mapping[str, Any]) -> tuple[int, str, str]:
    kind = str(obj.get("kind", ""))
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return rank, kind, str((obj.get("metadata") or {}).get("name", ""))


def render_documents(objects: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML: objects in apply order then by name; ``apiVersion, kind, metadata,
    spec`` first, every other key sorted; strings quoted wherever a YAML 1.1 reader (what
    kubectl and Argo CD use) or a YAML 1.2 one could take them for a number or a boolean.

    libyaml writes it (PyYAML's C emitter, about seven times faster than a pure-Python one:
    rendering is most of a workload's apply), in kubectl's own layout: a list inside a mapping
    is not indented further than its key. It is handed events, made here in one walk, rather
    than nodes: from a node the emitter asks the resolver twice per scalar, through Python,
    whether the text reads back as written, and calls the path resolvers at every level; an
    event carries that answer, remembered per text (``_scalar``), and the emitter writes the
    same bytes (the objects are trees of fresh values: there is nothing to alias). That made
    rendering about three times faster.
    """
    ordered = sorted(objects, key=sort_key)
    if not ordered:
        return ""
    try:
        return _written(ordered)
    except _Unwritten:
        return _emitted(ordered)


def _emitted(ordered: Sequence[Mapping[str, Any]]) -> str:
    """``render_documents`` through libyaml's emitter, fed events: the reference the direct
    writer below follows, and what writes whatever that writer leaves to it."""

    def feed(emit: Callable[[yaml.Event], None], dumper: Any) -> None:
        for obj in ordered:
            emit(_DOCUMENT_START)
            _events(emit, dumper, obj, top=True)
            emit(_DOCUMENT_END)

    return _emitting(feed)


def _emitting(feed: Callable[[Callable[[yaml.Event], None], Any], None]) -> str:
    """The text libyaml's emitter writes, with the manifests' settings, of the events ``feed``
    gives it (``feed`` gets the emitter's ``emit`` and the dumper, for its representer)."""
    stream = io.StringIO()
    dumper = _ManifestDumper(
        stream,
        default_flow_style=False,
        explicit_start=True,
        sort_keys=False,
        allow_unicode=True,
        width=4096,
    )
    try:
        dumper.open()
        feed(dumper.emit, dumper)
        dumper.close()
    finally:
        dumper.dispose()
    return stream.getvalue()


class _ManifestDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """The safe dumper (libyaml's where PyYAML has it), with the string styles below; its
    representer makes the nodes of values other than strings, lists, mappings, booleans,
    integers and None (floats, and anything rarer)."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str.__str__(text), style=_style(text))


_ManifestDumper.add_representer(str, _represent_str)
_ManifestDumper.add_multi_representer(str, _represent_str)

_STR_TAG: Final = "tag:yaml.org,2002:str"
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_SCALARS: Final[dict[type, tuple[str, Any]]] = {
    bool: ("tag:yaml.org,2002:bool", lambda v: "true" if v else "false"),
    int: ("tag:yaml.org,2002:int", str),
    type(None): ("tag:yaml.org,2002:null", lambda v: "null"),
}
# The emitter only reads events: the ones without a value are shared.
_DOCUMENT_START: Final = yaml.DocumentStartEvent(explicit=True)
_DOCUMENT_END: Final = yaml.DocumentEndEvent(explicit=False)
_MAPPING_START: Final = yaml.MappingStartEvent(None, _MAP_TAG, True, flow_style=False)
_MAPPING_END: Final = yaml.MappingEndEvent()
_SEQUENCE_START: Final = yaml.SequenceStartEvent(None, _SEQ_TAG, True, flow_style=False)
_SEQUENCE_END: Final = yaml.SequenceEndEvent()


_RESOLVER: Final = yaml.resolver.Resolver()
_REMEMBERED: Final = 100
"""The longest text whose event (tag, style) is remembered: keys, kinds, names and short
values come back in every workload; a file's content would only fill the caches."""
_CACHED: Final = 1024
"""Texts each cache remembers. What comes back is the keys and words every workload repeats
(a few dozen) and each workload's own names, within its own manifests; a first reconcile of
1,000 workloads hit as often with 1,024 as with 8,192, and in a daemon holding 10,000 the
larger caches were a few MiB of texts never asked for again."""


def _events(
    emit: Callable[[yaml.Event], None], dumper: Any, value: object, *, top: bool = False
) -> None:
    """Emit ``value`` as the events of the node PyYAML's safe representer (with
    ``_represent_str``) makes of it, keys ordered as described in ``render_documents``."""
    if isinstance(value, str):
        text = value if type(value) is str else str.__str__(value)
        emit(
            _short_scalar(text)
            if len(text) <= _REMEMBERED
            else _scalar(_STR_TAG, text, _style_of(text))
        )
    elif isinstance(value, Mapping):
        keys = sorted(value, key=str)
        if top:
            keys = [k for k in _TOP if k in value] + [k for k in keys if k not in _TOP]
        emit(_MAPPING_START)
        for key in keys:
            _events(emit, dumper, str(key))
            _events(emit, dumper, value[key])
        emit(_MAPPING_END)
    elif isinstance(value, list | tuple):
        emit(_SEQUENCE_START)
        for item in value:
            _events(emit, dumper, item)
        emit(_SEQUENCE_END)
    elif (scalar := _SCALARS.get(type(value))) is not None:
        emit(_typed_scalar(scalar[0], scalar[1](value)))
    else:  # floats and anything rarer: the representer's node
        _node_events(emit, dumper.represent_data(value))


class _Unwritten(Exception):
    """Something ``_written`` leaves to libyaml's emitter (``_emitted``)."""


_KEY: Final = 0
_VALUE: Final = 1
_ITEM: Final = 2
_WRITTEN_MAX_TEXT: Final = 1024
"""The longest one-line scalar written directly: libyaml breaks lines only past the width
(4096 columns), which a scalar this short, after a short key and a shallow indent, never nears."""
_WRITTEN_MAX_INDENT: Final = 256
_WRITTEN_MAX_KEY: Final = 100


def _written(ordered: Sequence[Mapping[str, Any]]) -> str:
    """``_emitted(ordered)``'s text, written line by line instead of through the emitter.

    Handing libyaml an event per key and value costs more than what it writes: a Python
    object made, converted and analysed per scalar. Manifests have one shape, block mappings
    and sequences of short scalars, whose layout is fixed (kubectl's: a sequence inside a
    mapping is not indented further than its key, an empty collection is ``{}`` or ``[]``),
    so it is written here, and each scalar as libyaml itself writes it (``_form``: asked once
    per text and place, remembered for short texts). Whatever else could differ (a document
    that is not a non-empty mapping, floats and other rare values, long keys or texts, deep
    nesting, a block scalar that keeps trailing lines) raises ``_Unwritten`` and the whole
    text is the emitter's, so the bytes are always libyaml's.
    """
    out: list[str] = []
    for obj in ordered:
        if not isinstance(obj, Mapping) or not obj:
            raise _Unwritten
        out.append("---\n")
        _write_mapping(out, obj, 0, inline=False, top=True)
    return "".join(out)


def _write_mapping(
    out: list[str], value: Mapping[Any, Any], indent: int, *, inline: bool, top: bool = False
) -> None:
    """A non-empty mapping whose keys start at column ``indent``; with ``inline`` its first key
    follows what is already on the line (a sequence's dash). Strings, dicts and lists, nearly
    every value, are written here; anything else by ``_write_value``."""
    if indent > _WRITTEN_MAX_INDENT:
        raise _Unwritten
    keys = sorted(value, key=str)
    if top:
        keys = [k for k in _TOP if k in value] + [k for k in keys if k not in _TOP]
    pad = " " * indent
    append = out.append
    for key in keys:
        if inline:
            inline = False
        else:
            append(pad)
        if type(key) is str:
            append(_key_form(key))
        else:
            text = str(key)
            append(_key_form(text if type(text) is str else str.__str__(text)))
        item = value[key]
        kind = type(item)
        if kind is str and len(item) <= _REMEMBERED and (line := _short_line(item, _VALUE)):
            append(line)
        elif kind is dict and item:
            append("\n")
            _write_mapping(out, item, indent + 2, inline=False)
        elif kind is list and item:
            append("\n")
            _write_sequence(out, item, indent, inline=False)
        else:
            _write_value(out, item, indent, _VALUE)


def _write_sequence(out: list[str], value: Sequence[Any], indent: int, *, inline: bool) -> None:
    """A non-empty sequence whose dashes are at column ``indent``."""
    if indent > _WRITTEN_MAX_INDENT:
        raise _Unwritten
    pad = " " * indent
    append = out.append
    for item in value:
        if inline:
            inline = False
        else:
            append(pad)
        kind = type(item)
        if kind is str and len(item) <= _REMEMBERED and (line := _short_line(item, _ITEM)):
            append("-")
            append(line)
        elif kind is dict and item:
            append("- ")
            _write_mapping(out, item, indent + 2, inline=True)
        else:
            append("-")
            _write_value(out, item, indent, _ITEM)


def _write_value(out: list[str], value: object, indent: int, place: int) -> None:
    """What follows a key's colon or an item's dash, to the end of its last line; ``indent``
    is the column of the mapping's keys or of the sequence's dashes."""
    if isinstance(value, str):
        text = value if type(value) is str else str.__str__(value)
        if len(text) <= _REMEMBERED:
            form = _short_form(text, place)
        else:
            style = _style_of(text)
            form = _glanced(text, style) or _form(_scalar(_STR_TAG, text, style), place)
        out.append(" ")
        if "\n" in form:
            out.append(_indented(form, indent))
        elif len(form) > _WRITTEN_MAX_TEXT:
            raise _Unwritten
        else:
            out.append(form)
        out.append("\n")
    elif isinstance(value, Mapping | list | tuple):
        mapping = isinstance(value, Mapping)
        if not value:
            out.append(" {}\n" if mapping else " []\n")
            return
        item = place == _ITEM
        out.append(" " if item else "\n")
        # An item's collection starts after its dash; a mapping's keys go two columns in; a
        # sequence under a key keeps the key's column (kubectl's layout).
        column = indent + 2 if item or mapping else indent
        if isinstance(value, Mapping):
            _write_mapping(out, value, column, inline=item)
        else:
            _write_sequence(out, value, column, inline=item)
    elif (scalar := _SCALARS.get(type(value))) is not None:
        out.append(" ")
        out.append(_typed_form(scalar[0], scalar[1](value), place))
        out.append("\n")
    else:
        raise _Unwritten


@functools.lru_cache(maxsize=_CACHED)
def _key_form(text: str) -> str:
    """A key as libyaml writes it, with its colon."""
    if len(text) > _WRITTEN_MAX_KEY:
        raise _Unwritten
    return _form(_short_scalar(text), _KEY) + ":"


@functools.lru_cache(maxsize=_CACHED)
def _short_line(text: str, place: int) -> str:
    """A short string's form after a colon or a dash, to the end of its line; empty when the
    form takes several lines (their indentation depends on where it is written)."""
    form = _short_form(text, place)
    return "" if "\n" in form else f" {form}\n"


def _indented(form: str, indent: int) -> str:
    """A block scalar's form (as written at column 0) for a collection at column ``indent``:
    its content lines move right with it; empty lines stay empty."""
    if not indent:
        return form
    pad = " " * indent
    head, *lines = form.split("\n")
    return "\n".join([head, *(pad + line if line else line for line in lines)])


@functools.lru_cache(maxsize=_CACHED)
def _short_form(text: str, place: int) -> str:
    """``_form`` of a short string (see ``_REMEMBERED``), remembered.

    Most texts are names, images and words whose form is plain to see, and asking libyaml
    costs an emitter each: a text that starts with a letter and holds no space, no indicator
    but an inner colon, is one libyaml writes as it is (unless ``_style_of`` quotes it: a
    YAML 1.1 word); one of letters, digits, ``_ . + -`` that ``_style_of`` quotes is written
    between double quotes without escapes. Every other text is asked."""
    return _glanced(text, _style(text)) or _form(_short_scalar(text), place)


def _glanced(text: str, style: str | None) -> str:
    """``text``'s form when it is plain to see (see ``_short_form``), else empty. A block
    literal of printable ASCII lines (what ``_style_of`` gives one) is its lines indented
    by two, after ``|`` when it ends with one line break and ``|-`` when with none."""
    if style is None and (_PLAIN_SAFE.fullmatch(text) or _PLAIN_SAFE_DIGITS.fullmatch(text)):
        return text
    if style == '"' and _QUOTED_SAFE.fullmatch(text):
        return f'"{text}"'
    if style == "|" and text.isascii() and not text.endswith("\n\n"):
        body = text[:-1] if text.endswith("\n") else text
        lines = "\n".join(f"  {line}" if line else "" for line in body.split("\n"))
        return ("|\n" if len(body) < len(text) else "|-\n") + lines
    return ""


_PLAIN_SAFE: Final = re.compile(
    r"[A-Za-z_](?:[-A-Za-z0-9_./()$:@=%&?+,~#]*[-A-Za-z0-9_./()$@=%&?+,~#])?"
)
_PLAIN_SAFE_DIGITS: Final = re.compile(r"[0-9][A-Za-z0-9]*")
_QUOTED_SAFE: Final = re.compile(r"[-A-Za-z0-9_.+]+")


@functools.lru_cache(maxsize=256)
def _typed_form(tag: str, text: str, place: int) -> str:
    """``_form`` of a boolean, an integer or None, remembered."""
    return _form(_typed_scalar(tag, text), place)


def _form(event: yaml.ScalarEvent, place: int) -> str:
    """How libyaml writes ``event`` as a key, a mapping's value or a sequence's item, at
    column 0: it is asked, with a one-entry document, so the quoting and escaping are its
    own. ``_Unwritten`` for what does not fit ``_written``'s layout: a key that is not a
    simple one-line key, a multi-line form other than a block literal that strips or clips
    its final line break (keeping them, ``|+``, makes the emitter end the document with
    ``...``)."""
    other = _short_scalar("k")
    if place == _KEY:
        events = [_MAPPING_START, event, other, _MAPPING_END]
        before, after = "---\n", ": k\n"
    elif place == _VALUE:
        events = [_MAPPING_START, other, event, _MAPPING_END]
        before, after = "---\nk: ", "\n"
    else:
        events = [_SEQUENCE_START, event, _SEQUENCE_END]
        before, after = "---\n- ", "\n"
    text = _emitted_events(events)
    if not (text.startswith(before) and text.endswith(after)):
        raise _Unwritten
    form = text[len(before) : len(text) - len(after)]
    if "\n" in form and (place == _KEY or form.split("\n", 1)[0] not in ("|", "|-")):
        raise _Unwritten
    if place == _KEY and (not form or form[0] == "?"):
        raise _Unwritten
    return form


def _emitted_events(events: Sequence[yaml.Event]) -> str:
    """One document of ``events``, as ``_emitted`` writes it."""

    def feed(emit: Callable[[yaml.Event], None], dumper: Any) -> None:
        for event in (_DOCUMENT_START, *events, _DOCUMENT_END):
            emit(event)

    return _emitting(feed)


def _node_events(emit: Callable[[yaml.Event], None], node: yaml.Node) -> None:
    """The events PyYAML's serializer emits for ``node`` (without anchors: nothing repeats)."""
    if isinstance(node, yaml.ScalarNode):
        emit(_scalar(node.tag, node.value, node.style))
    elif isinstance(node, yaml.SequenceNode):
        implicit = node.tag == _RESOLVER.resolve(yaml.SequenceNode, node.value, True)  # type: ignore[no-untyped-call]
        emit(yaml.SequenceStartEvent(None, node.tag, implicit, flow_style=node.flow_style))
        for item in node.value:
            _node_events(emit, item)
        emit(_SEQUENCE_END)
    elif isinstance(node, yaml.MappingNode):
        implicit = node.tag == _RESOLVER.resolve(yaml.MappingNode, node.value, True)  # type: ignore[no-untyped-call]
        emit(yaml.MappingStartEvent(None, node.tag, implicit, flow_style=node.flow_style))
        for key, item in node.value:
            _node_events(emit, key)
            _node_events(emit, item)
        emit(_MAPPING_END)
    else:
        raise TypeError(f"cannot write a {type(node).__name__} as YAML")


@functools.lru_cache(maxsize=_CACHED)
def _short_scalar(text: str) -> yaml.ScalarEvent:
    """``_scalar`` of a string, remembered for short texts (see ``_REMEMBERED``)."""
    return _scalar(_STR_TAG, text, _style_of(text))


@functools.lru_cache(maxsize=256)
def _typed_scalar(tag: str, text: str) -> yaml.ScalarEvent:
    """``_scalar`` of a boolean, an integer or None, remembered: few texts come back."""
    return _scalar(tag, text, None)


def _scalar(tag: str, text: str, style: str | None) -> yaml.ScalarEvent:
    """A scalar's event as PyYAML's serializer makes it from a node: whether its tag may be
    left out when written plain, and when written quoted, is whether the resolver finds that
    tag from the text (the safe dumper has no path resolvers: the text alone decides)."""
    plain = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) == tag  # type: ignore[no-untyped-call]
    quoted = _RESOLVER.resolve(yaml.ScalarNode, text, (False, True)) == tag  # type: ignore[no-untyped-call]
    return yaml.ScalarEvent(None, tag, (plain, quoted), text, style=style)


def _style(text: str) -> str | None:
    """``_style_of``, remembered for short texts (see ``_REMEMBERED``)."""
    return _short_style(text) if len(text) <= _REMEMBERED else _style_of(text)


@functools.lru_cache(maxsize=_CACHED)
def _short_style(text: str) -> str | None:
    return _style_of(text)


def _style_of(text: str) -> str | None:
    """Double quotes for what a reader could take for something else, and for multi-line text
    a block literal cannot carry; a block literal for other multi-line text; else plain, where
    the emitter finds plain safe."""
    if _YAML11_WORDS.match(text) or _YAML11_NUMBER.match(text):
        return '"'
    if "\n" in text:
        return "|" if _literal_safe(text) else '"'
    return None


def _literal_safe(text: str) -> bool:
    """Block literals cannot carry every string faithfully; keep them for plain multi-line text."""
    lines = text.split("\n")
    return not text.startswith((" ", "\n")) and all(
        line.isprintable() and line == line.rstrip(" ") for line in lines
    )
