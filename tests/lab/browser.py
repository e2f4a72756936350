"""A real headless browser for the tests: Chromium from Debian's packages (scripts/setup-system.sh installs it).

`chromium()` finds the binary; `load(path, ...)` opens a local file once for its DOM after load (``--dump-dom``)
and once for a screenshot of the viewport (``--screenshot``), with the network cut off (every host name resolves
to nothing), a fresh profile and no sandbox (the tests run as root)."""
import os
import shutil
import subprocess

NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')


def chromium():
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(binary, args, profile, timeout):
    cmd = [binary, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
           '--no-default-browser-check', '--disable-extensions', '--hide-scrollbars', '--mute-audio',
           '--host-resolver-rules=MAP * ~NOTFOUND', '--user-data-dir=' + profile] + list(args)
    env = dict(os.environ, HOME=profile)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def load(path, workdir, width=1280, height=2400, timeout=120):
    """``(dom, screenshot path)`` of the local file ``path`` as Chromium renders it."""
    binary = chromium()
    if binary is None:
        raise RuntimeError('no Chromium found ({0}); run scripts/setup-system.sh (apt-get install chromium)'.format(
            ', '.join(NAMES)))
    url = 'file://' + os.path.abspath(path)
    profile = os.path.join(str(workdir), 'chromium-profile')
    os.makedirs(profile, exist_ok=True)
    dom = _run(binary, ['--dump-dom', url], profile, timeout)
    if dom.returncode != 0 or '<html' not in dom.stdout:
        raise RuntimeError('chromium --dump-dom failed (rc={0}): {1}'.format(dom.returncode, dom.stderr[-2000:]))
    shot = os.path.join(str(workdir), 'screenshot.png')
    proc = _run(binary, ['--screenshot=' + shot, '--window-size={0},{1}'.format(width, height), url], profile, timeout)
    if proc.returncode != 0 or not os.path.exists(shot):
        raise RuntimeError('chromium --screenshot failed (rc={0}): {1}'.format(proc.returncode, proc.stderr[-2000:]))
    return dom.stdout, shot
