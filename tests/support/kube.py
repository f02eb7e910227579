"""A real Kubernetes control plane on loopback for the kubernetes tier: etcd, kube-apiserver and
kube-controller-manager (namespace and garbage-collector controllers), from
scripts/envtest-assets, with a throwaway CA and an admin client certificate."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def assets() -> Path:
    """The binaries' directory (built once and cached by scripts/envtest-assets)."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "envtest-assets")], capture_output=True, text=True, timeout=3600
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/envtest-assets failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


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


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


@dataclass
class KubeControlPlane:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sandboxd-kube-")))
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    def client(self) -> httpx.Client:
        """An httpx client authenticated as `admin` (group system:masters)."""
        context = ssl.create_default_context(cafile=str(self.root / "ca.crt"))
        context.load_cert_chain(str(self.root / "admin.crt"), str(self.root / "admin.key"))
        return httpx.Client(base_url=self.url, verify=context, timeout=30)

    def start(self) -> None:
        bindir = assets()
        self._certificates()
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn("etcd", [str(bindir / "etcd"), "--data-dir", str(self.root / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}", "--unsafe-no-fsync"])  # fmt: skip
        r = self.root
        self._spawn("kube-apiserver", [str(bindir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={r / 'serving.crt'}", f"--tls-private-key-file={r / 'serving.key'}",
            f"--client-ca-file={r / 'ca.crt'}", f"--service-account-issuer={self.url}/",
            f"--service-account-key-file={r / 'sa.pub'}",
            f"--service-account-signing-key-file={r / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount", "--allow-privileged=true",
            "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false"])  # fmt: skip
        self._wait_ready()
        self._write_kubeconfig()
        self._spawn("kube-controller-manager", [str(bindir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            "--controllers=namespace-controller,garbage-collector-controller",
            "--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false"])  # fmt: skip

    def stop(self) -> None:
        for proc in reversed(self.procs):
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
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                if any(p.poll() is not None for p in self.procs):
                    break
                try:
                    ready = client.get("/readyz").status_code == 200
                    if ready and client.get("/api/v1/namespaces/default").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        raise RuntimeError(
            f"kube-apiserver not ready:\n{self.log('kube-apiserver')}\n{self.log('etcd')}"
        )

    def _certificates(self) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert(_name("sandboxd-test-ca"), ca_key, ca=True)
        self._write("ca", ca, ca_key)
        for name, subject, server in (
            ("serving", _name("kube-apiserver"), True),
            ("admin", _name("admin", "system:masters"), False),
        ):
            key = ec.generate_private_key(ec.SECP256R1())
            self._write(name, _cert(subject, key, issuer=(ca.subject, ca_key), server=server), key)
        sa = ec.generate_private_key(ec.SECP256R1())
        (self.root / "sa.key").write_bytes(_pem(sa))
        (self.root / "sa.pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _write(self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (self.root / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.root / f"{name}.key").write_bytes(_pem(key))

    def _write_kubeconfig(self) -> None:
        import base64

        def b64(name: str) -> str:
            return base64.b64encode((self.root / name).read_bytes()).decode()

        self.kubeconfig.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster: {{server: "{self.url}", certificate-authority-data: {b64("ca.crt")}}}
users:
- name: admin
  user: {{client-certificate-data: {b64("admin.crt")}, client-key-data: {b64("admin.key")}}}
contexts:
- name: envtest
  context: {{cluster: envtest, user: admin}}
current-context: envtest
"""
        )
