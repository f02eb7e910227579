"""A real Kubernetes control plane on loopback for the kubernetes tier, from scripts/envtest-assets.

etcd and kube-apiserver (throwaway CA; every user is a client certificate the CA signs on demand),
kube-controller-manager (CONTROLLERS), kube-scheduler, and kwok playing the kubelet of two fake
Nodes, driven by tests/support/kwok/stages.yaml: Pods are bound, reported Running and Ready, and
Deployments become Available for real. The Istio VirtualService CRD is Established before the
controller-manager starts (its garbage collector refreshes its resource list only every 30 s).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import poll
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
STAGES = Path(__file__).resolve().parent / "kwok" / "stages.yaml"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager",  # what the script insists on
            "kube-scheduler", "kwok", "kubectl")  # fmt: skip
NODES = {"kwok-node-0": "10.96.0.1", "kwok-node-1": "10.96.0.2"}  # name: InternalIP
NODE_SIZE = {"cpu": "32", "memory": "256Gi", "pods": "1000"}
# kube-controller-manager's share: finalize namespaces, collect owned objects, count quota usage,
# roll Deployments out to Pods, and fill the aggregated ClusterRoles (admin, edit, view).
CONTROLLERS = (
    "namespace-controller,garbage-collector-controller,resourcequota-controller,"
    "deployment-controller,replicaset-controller,clusterrole-aggregation-controller"
)
CRD_NAME = "virtualservices.networking.istio.io"
VIRTUAL_SERVICE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": "networking.istio.io",
        "scope": "Namespaced",
        "names": {"plural": "virtualservices", "singular": "virtualservice",
                  "kind": "VirtualService", "listKind": "VirtualServiceList", "shortNames": ["vs"]},
        "versions": [
            {"name": version, "served": True, "storage": version == "v1",
             "subresources": {"status": {}},
             "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
            for version in ("v1", "v1beta1", "v1alpha3")
        ],
    },
}  # fmt: skip


def assets() -> Path:
    """The binaries' directory (built once and cached by scripts/envtest-assets), with all of
    BINARIES: a KUBEBUILDER_ASSETS directory holding only the script's essential three is refused
    here, by name, rather than failing later as a Deployment that never becomes Available."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "envtest-assets")], capture_output=True, text=True, timeout=3600
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/envtest-assets failed:\n{result.stderr[-4000:]}")
    bindir = Path(result.stdout.strip().splitlines()[-1])
    missing = [name for name in BINARIES if not os.access(bindir / name, os.X_OK)]
    if missing:
        raise RuntimeError(
            f"{bindir} (KUBEBUILDER_ASSETS={os.environ.get('KUBEBUILDER_ASSETS', '')!r}) has no "
            f"{', '.join(missing)}: the kubernetes tier runs kube-scheduler and kwok so that "
            "Deployments become Available, and its tests call kubectl. Add them there, or unset "
            "KUBEBUILDER_ASSETS so that scripts/envtest-assets builds them into its cache."
        )
    return bindir


def default_groups(user: str) -> tuple[str, ...]:
    """The groups the apiserver gives `user` when it logs in the usual way: `admin` is in
    system:masters (bypasses RBAC); system:serviceaccount:<ns>:<name> gets the two service-account
    groups, as with a real token. Everyone also gets system:authenticated from the apiserver."""
    if user == "admin":
        return ("system:masters",)
    if user.startswith("system:serviceaccount:") and user.count(":") == 3:
        return ("system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}")
    return ()


@dataclass
class KubeControlPlane:
    """One plane per test session: `start()`, then `client()` / `kubeconfig` as admin,
    `client(user)` / `kubeconfig_for(user)` as anyone else, `bin("kubectl")`, `log(name)`."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sandboxd-kube-")))
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    bindir: Path | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig, for kubectl, kwok and the `kubernetes` Python client."""
        return self._user_file("admin", default_groups("admin")).with_suffix(".kubeconfig")

    def bin(self, name: str) -> Path:
        """The path of one of BINARIES (e.g. kubectl) from the assets this plane runs on."""
        if self.bindir is None or name not in BINARIES:
            raise LookupError(f"no {name} binary (known: {BINARIES}; started: {bool(self.bindir)})")
        return self.bindir / name

    def client(self, user: str = "admin", *, groups: Sequence[str] | None = None) -> httpx.Client:
        """An httpx client authenticated as `user` (groups: `default_groups(user)` unless given),
        by a client certificate: RBAC decides what it may do, as for any user of that name."""
        cert, key = self.credentials(user, groups=groups)
        context = ssl.create_default_context(cafile=str(self.root / "ca.crt"))
        context.load_cert_chain(str(cert), str(key))
        return httpx.Client(base_url=self.url, verify=context, timeout=30)

    def kubeconfig_for(self, user: str, *, groups: Sequence[str] | None = None) -> Path:
        """A kubeconfig file authenticating as `user`, like `client(user, groups=groups)`."""
        cert, key = self.credentials(user, groups=groups)
        path = cert.with_suffix(".kubeconfig")
        if not path.exists():
            ca, crt, pem = (
                base64.b64encode(f.read_bytes()).decode() for f in (self.root / "ca.crt", cert, key)
            )
            path.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "envtest",
                "clusters": [{"name": "envtest", "cluster": {
                    "server": self.url, "certificate-authority-data": ca}}],
                "users": [{"name": user, "user": {
                    "client-certificate-data": crt, "client-key-data": pem}}],
                "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": user}}],
            }, indent=2))  # fmt: skip
        return path

    def credentials(self, user: str, *, groups: Sequence[str] | None = None) -> tuple[Path, Path]:
        """Certificate and key files for `user` (CN) in `groups` (O), minted once per pair."""
        groups = default_groups(user) if groups is None else tuple(groups)
        base = self._user_file(user, groups)
        if not base.with_suffix(".crt").exists():
            ca_key = serialization.load_pem_private_key((self.root / "ca.key").read_bytes(), None)
            ca = x509.load_pem_x509_certificate((self.root / "ca.crt").read_bytes())
            assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
            key = ec.generate_private_key(ec.SECP256R1())
            base.parent.mkdir(exist_ok=True)
            cert = _cert(_name(user, groups), key, issuer=(ca.subject, ca_key))
            _write(base, cert, key)
        return base.with_suffix(".crt"), base.with_suffix(".key")

    def _user_file(self, user: str, groups: Sequence[str]) -> Path:
        """users/<user, filename-safe>-<hash of user and groups>, without a suffix."""
        digest = hashlib.sha256(repr((user, tuple(groups))).encode()).hexdigest()[:8]
        return self.root / "users" / (re.sub(r"[^\w-]", "_", user) + "-" + digest)

    def start(self) -> None:
        """Start everything; return once the apiserver is ready, the VirtualService CRD is
        Established, kwok has made every fake Node Ready and the controller-manager works."""
        self.bindir = bindir = assets()
        self._certificates()
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn("etcd", [str(bindir / "etcd"), "--data-dir", str(self.root / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}", "--unsafe-no-fsync"])  # fmt: skip
        r = self.root
        # TaintNodesByCondition would give each new Node the not-ready taint, which only the
        # node-lifecycle controller removes; we run none, so kwok's Ready status is the whole story.
        self._spawn("kube-apiserver", [str(bindir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={r / 'serving.crt'}", f"--tls-private-key-file={r / 'serving.key'}",
            f"--client-ca-file={r / 'ca.crt'}", f"--service-account-issuer={self.url}/",
            f"--service-account-key-file={r / 'sa.pub'}",
            f"--service-account-signing-key-file={r / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/16", "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
            "--allow-privileged=true", "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false"])  # fmt: skip
        with self.client() as client:
            self._until("kube-apiserver", lambda: _apiserver_ready(client), timeout=120)
            assert self.kubeconfig_for("admin") == self.kubeconfig
            self._spawn("kube-scheduler", [str(bindir / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0"])  # fmt: skip
            self._spawn("kwok", [str(bindir / "kwok"), f"--kubeconfig={self.kubeconfig}",
                f"--config={STAGES}", "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.0/16"])  # fmt: skip
            _create(client, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                    VIRTUAL_SERVICE_CRD)  # fmt: skip
            for name, ip in NODES.items():
                _create(client, "/api/v1/nodes", _node(name, ip))
            self._until("the VirtualService CRD", lambda: _crd_established(client))
            self._spawn("kube-controller-manager", [str(bindir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={CONTROLLERS}",
                "--leader-elect=false", "--secure-port=0",
                "--use-service-account-credentials=false"])  # fmt: skip
            self._until("kwok's fake nodes", lambda: all(_node_ready(client, n) for n in NODES))
            self._until("the aggregated ClusterRoles", lambda: _aggregated(client, "edit"))

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.root / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def _until(self, what: str, ready: Callable[[], bool], *, timeout: float = 60) -> None:
        """Poll `ready` until it holds; fail early, with every log, if a process has exited."""

        def probe() -> bool:
            exited = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if exited:
                raise RuntimeError(f"{what} not ready (exited: {exited}):\n{self._logs()}")
            return ready()

        poll.until(
            probe, timeout=timeout, what=what, ignoring=(httpx.HTTPError,), context=self._logs
        )

    def _logs(self) -> str:
        return "\n".join(f"--- {name}.log\n{self.log(name)}" for name in self.procs)

    def _certificates(self) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert(_name("sandboxd-test-ca"), ca_key, ca=True)
        _write(self.root / "ca", ca, ca_key)
        key = ec.generate_private_key(ec.SECP256R1())
        serving = _cert(_name("kube-apiserver"), key, issuer=(ca.subject, ca_key), server=True)
        _write(self.root / "serving", serving, key)
        sa = ec.generate_private_key(ec.SECP256R1())
        (self.root / "sa.key").write_bytes(_pem(sa))
        (self.root / "sa.pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def _apiserver_ready(client: httpx.Client) -> bool:
    ready = client.get("/readyz").status_code == 200
    return ready and client.get("/api/v1/namespaces/default").status_code == 200


def _crd_established(client: httpx.Client) -> bool:
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
    return _condition(client.get(path), "Established")


def _node_ready(client: httpx.Client, name: str) -> bool:
    return _condition(client.get(f"/api/v1/nodes/{name}"), "Ready")


def _aggregated(client: httpx.Client, role: str) -> bool:
    """Whether the controller-manager has filled `role` (bindings to it grant nothing before)."""
    response = client.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}")
    return response.status_code == 200 and bool(response.json().get("rules"))


def _condition(response: httpx.Response, kind: str) -> bool:
    if response.status_code != 200:
        return False
    conditions = response.json().get("status", {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def _create(client: httpx.Client, path: str, obj: dict[str, Any]) -> None:
    response = client.post(path, json=obj)
    if response.status_code not in (201, 409):
        raise RuntimeError(f"creating {path}: {response.status_code} {response.text}")


def _node(name: str, ip: str) -> dict[str, Any]:
    """A fake Node kwok manages (selected by its annotation); the capacity is what the scheduler
    sees, and kwok's node-ready stage keeps it and the addresses."""
    addresses = [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok"},
        },
        "status": {"capacity": NODE_SIZE, "allocatable": NODE_SIZE, "addresses": addresses},
    }  # fmt: skip


def _write(base: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    base.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    base.with_suffix(".key").write_bytes(_pem(key))


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
    return x509.Name(attrs)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())
