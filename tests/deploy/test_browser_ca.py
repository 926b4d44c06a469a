"""docs/operations.md's command for trusting a private CA in Chromium, run as written: after
it, headless Chromium opens the clinician page of a server whose certificate that CA signed,
with no certificate error; without it, Chromium refuses the same page."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

from signaling.testing import running_server
from tests.deploy.manual import ROOT
from tests.node.test_tls_errors import make_private_ca
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS


def documented_certutil() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    (cmd,) = re.findall(r"`(certutil -d sql:\$HOME/\.pki/nssdb [^`]+)`", text)
    return cmd


async def open_page(home: Path, url: str) -> str:
    """Chromium with this HOME (its NSS database lives there) loads url; returns the title
    once the page's script has run."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            env={**os.environ, "HOME": str(home)},
        )
        try:
            page = await browser.new_page()
            response = await page.goto(url)
            assert response is not None and response.ok
            await page.wait_for_load_state("load")
            return await page.title()
        finally:
            await browser.close()


async def test_documented_certutil_makes_chromium_trust_the_private_ca(tmp_path: Path) -> None:
    assert shutil.which("certutil"), "certutil (libnss3-tools) is required"
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, chain, key = make_private_ca(certs)
    assert ca.name == "ca.pem"  # the file name the manual's command uses
    untrusting, trusting = tmp_path / "home-without-ca", tmp_path / "home-with-ca"
    for home in (untrusting, trusting):
        (home / ".pki" / "nssdb").mkdir(parents=True)
        subprocess.run(
            ["certutil", "-d", f"sql:{home}/.pki/nssdb", "-N", "--empty-password"], check=True
        )
    cmd = documented_certutil()
    subprocess.run(
        ["sh", "-c", cmd], cwd=certs, env={**os.environ, "HOME": str(trusting)}, check=True
    )
    async with running_server(tmp_path / "server", tls_cert=chain, tls_key=key) as srv:
        assert srv.url.startswith("https://")
        url = srv.url + "/join"
        try:
            await open_page(untrusting, url)
        except PlaywrightError as e:
            assert "ERR_CERT_AUTHORITY_INVALID" in str(e)
        else:
            raise AssertionError("Chromium opened the page without trusting the CA")
        title = await open_page(trusting, url)
    assert "p2pmed" in title.lower()
