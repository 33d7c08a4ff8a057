"""The systemd unit: what CONTRACT section 7 and docs/deploy.md promise about it.

`systemd-analyze` (present wherever systemd is, e.g. every Debian machine with systemd) judges
the hardening and the syntax; the contract's directives are checked by reading the file.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.daemon import DaemonProcess, write_config
from tests.helpers.receiver import Receiver
from tests.integration.conftest import Upstream
from watcher.cli.common import EXIT_CONFIG, EXIT_STORE_IN_USE
from watcher.cli.main import build_parser
from watcher.config.settings import load_config
from watcher.upstream.sandbox import success
from watcher.webhook_secret import generate_secret

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "apixo-watcher.service"
PROD_CONFIG = ROOT / "systemd" / "config.yaml"
CONFIG_PATH = "/etc/apixo-watcher/config.yaml"
MAX_EXPOSURE = 1.5

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (no systemd here)"
)


def _directives(path: Path = UNIT) -> dict[str, list[str]]:
    """Every `Key=value` of the unit, by key, in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _one(key: str) -> str:
    values = _directives().get(key, [])
    assert len(values) == 1, f"{key}= should appear exactly once, found {values}"
    return values[0]


_SPAN_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _seconds(span: str) -> float:
    """A systemd time span (`30s`, `1min 30s`, `90`) in seconds."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * _SPAN_UNITS[unit or "s"]
    return total


def _command(key: str) -> list[str]:
    return shlex.split(_one(key))


def _run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_systemd_analyze
def test_security_exposure_is_at_most_1_5() -> None:
    result = _run_analyze("security", "--offline=true", "--no-pager", str(UNIT))
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, f"no exposure level in systemd-analyze output:\n{output}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{output}"


@needs_systemd_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    # The unit names /opt/apixo-watcher/venv/bin/apixo-watcher, which exists only on an
    # installed machine, and `verify` rightly reports a missing ExecStart binary. So we verify
    # a copy whose commands point at a binary that exists (this venv's own apixo-watcher, the
    # same program); every other line is byte-for-byte the real unit, and any message at all
    # fails the test.
    binary = _command("ExecStart")[0]
    installed = Path(sys.executable).parent / "apixo-watcher"
    assert installed.exists(), "the apixo-watcher console script is not installed"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(binary, str(installed)))
    result = _run_analyze("verify", "--man=no", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


@needs_systemd_analyze
def test_verify_complains_about_nothing_but_the_uninstalled_binary() -> None:
    # The same check on the file as shipped: the only messages allowed are about the binary,
    # which does not exist until docs/deploy.md's install step.
    binary = _command("ExecStart")[0]
    result = _run_analyze("verify", "--man=no", str(UNIT))
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    expected = f"Command {binary} is not executable: No such file or directory"
    unexpected = [line for line in lines if not line.endswith(expected)]
    assert not unexpected, "\n".join(lines)


def test_type_notify_with_only_the_main_process_notifying() -> None:
    assert _one("Type") == "notify"
    assert _one("NotifyAccess") == "main"


def test_exec_start_runs_the_daemon_with_the_etc_config() -> None:
    argv = _command("ExecStart")
    assert argv[0] == "/opt/apixo-watcher/venv/bin/apixo-watcher"
    assert argv[1] == "run"
    assert argv[argv.index("-c") + 1] == CONFIG_PATH
    # The arguments are ones the real command accepts.
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run"


def test_exec_reload_is_the_synchronous_reload_command() -> None:
    argv = _command("ExecReload")
    assert argv[0] == _command("ExecStart")[0]
    assert argv[1] == "reload"
    assert argv[argv.index("-c") + 1] == CONFIG_PATH
    assert build_parser().parse_args(argv[1:]).command == "reload"


def test_restarts_on_failure_but_not_on_a_config_error_or_a_store_in_use() -> None:
    assert _one("Restart") == "on-failure"
    prevented = _one("RestartPreventExitStatus").split()
    assert str(EXIT_CONFIG) in prevented
    assert str(EXIT_STORE_IN_USE) in prevented


def test_the_open_files_limit_leaves_room_for_many_connections() -> None:
    # One value: soft and hard limit alike (the daemon raises its soft limit to the hard one).
    assert int(_one("LimitNOFILE")) >= 16384


def test_stop_timeout_exceeds_the_grace_period() -> None:
    args = build_parser().parse_args(_command("ExecStart")[1:])
    grace_s = float(args.grace)
    stop_s = _seconds(_one("TimeoutStopSec"))
    # systemd SIGKILLs after TimeoutStopSec: the grace period plus closing the store must fit,
    # with room to spare.
    assert stop_s >= grace_s + 10, (stop_s, grace_s)


def test_watchdog_is_on_and_leaves_room_for_the_loops() -> None:
    watchdog_s = _seconds(_one("WatchdogSec"))
    # Pings come every WatchdogSec/2, and only after both loops reported progress (they do at
    # least every second); a too-short watchdog would kill a healthy daemon under load.
    assert 10 <= watchdog_s <= 300


def test_dynamic_user_with_state_configuration_and_runtime_directories() -> None:
    assert _one("DynamicUser") == "yes"
    assert _one("StateDirectory") == "apixo-watcher"
    assert _one("ConfigurationDirectory") == "apixo-watcher"
    assert _one("RuntimeDirectory") == "apixo-watcher"


def test_secrets_come_from_credentials_the_example_config_names() -> None:
    credentials = {value.split(":")[0] for value in _directives()["LoadCredential"]}
    assert {"apixo-api-key", "app-webhook-secret"} <= credentials
    text = PROD_CONFIG.read_text()
    assert "api_key_file: apixo-api-key" in text
    assert "secret_file: app-webhook-secret" in text


def test_hardening_keeps_what_the_daemon_needs() -> None:
    families = set(_one("RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert _one("ProtectSystem") == "strict"
    assert _one("CapabilityBoundingSet") == ""
    assert "PrivateNetwork" not in _directives()  # the upstream and endpoints are remote


def test_the_example_production_config_is_valid_under_systemd(tmp_path: Path) -> None:
    # As the service sees it: credentials in $CREDENTIALS_DIRECTORY, the store under
    # $STATE_DIRECTORY. Credential files often end in a newline (echo ... > file).
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "apixo-api-key").write_text("sk-live-0123456789abcdef\n")
    secret = generate_secret()
    (credentials / "app-webhook-secret").write_text(secret + "\n")
    state = tmp_path / "state"
    config = load_config(
        PROD_CONFIG,
        environ={"CREDENTIALS_DIRECTORY": str(credentials), "STATE_DIRECTORY": str(state)},
    )
    assert config.store.path == state / "watcher.db"
    assert config.upstream.api_key.reveal() == "sk-live-0123456789abcdef"
    (endpoint,) = config.endpoints
    assert [s.reveal() for s in endpoint.secrets] == [secret]
    assert config.intake.unix_path is None
    assert config.intake.host == "127.0.0.1"


# Run first in the daemon's interpreter (a sitecustomize module): turn on the kernel's own
# MemoryDenyWriteExecute (prctl PR_SET_MDWE, Linux 6.3+) and prove it is in force. systemd 252
# implements the directive with a seccomp filter refusing the same mappings; newer systemd
# versions use this very prctl.
_MDWE_SITECUSTOMIZE = """
import ctypes, mmap, os
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) == 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        open(os.environ["MDWE_MARKER"], "w").write("refused")
"""


async def test_the_daemon_works_without_writable_executable_memory(
    tmp_path: Path, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    # The unit sets MemoryDenyWriteExecute=yes: libffi closures (ctypes/cffi callbacks) or a
    # JIT in some dependency would break under it. This runs the real daemon under the same
    # restriction through a task's whole life: poll, sign, deliver.
    assert _one("MemoryDenyWriteExecute") == "yes"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_MDWE_SITECUSTOMIZE)
    marker = tmp_path / "mdwe"
    upstream.state.script("mdwe_task", success())
    endpoint = {"name": "app", "url": receiver.url("/hook"), "secret": secret}
    config = write_config(tmp_path, upstream_url=upstream.url, endpoints=[endpoint])
    daemon = DaemonProcess(config, env={"PYTHONPATH": str(site), "MDWE_MARKER": str(marker)})
    try:
        await daemon.start()
        if not marker.exists():
            pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
        base = f"http://{daemon.intake_address()}"
        async with aiohttp.ClientSession() as http:
            body = {"task_id": "mdwe_task", "model": "nano-banana"}
            async with http.post(f"{base}/v1/tasks", json=body) as resp:
                assert resp.status == 201
        (request,) = await receiver.wait_for(1, path="/hook", timeout=10)
        assert request.verified
        assert request.body["type"] == "task.succeeded"
        assert "Traceback" not in daemon.log_text()
    finally:
        await daemon.close()
