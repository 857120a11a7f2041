"""Boot once: make a generated unattended file call back to treeboot when the install ends.

Pure text edits of the rendered files, one per format: preseed ``late_command``, kickstart
``%post``, AutoYaST ``init-scripts``, autoinstall ``late-commands``. The callback is a plain
GET of ``/done/MAC``; after it, that MAC is told to boot its local disk.
"""

from __future__ import annotations

import re

# wget is in d-i's busybox and in most installers; curl where wget is not.
_GET = "wget -q -O /dev/null {url} || curl -fsS -o /dev/null {url} || true"


def callback_command(url: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9:/.\[\]%_?=-]+", url):
        raise ValueError(f"unexpected callback URL {url!r}")
    return _GET.format(url=url)


def add_callback(name: str, text: str, url: str) -> str | None:
    """``text`` (the file ``name``) with the callback added; None if the format is not known
    or already has a section the callback cannot be added to safely."""
    cmd = callback_command(url)
    if name.endswith("preseed.cfg"):
        return _preseed(text, cmd)
    if name.endswith(".ks") or name.endswith("ks.cfg"):
        return text.rstrip("\n") + f"\n\n%post --nochroot\n{cmd}\n%end\n"
    if name.endswith(".xml") and "<scripts>" not in text and "</profile>" in text:
        script = (
            '  <scripts>\n    <init-scripts config:type="list">\n      <script>\n'
            "        <filename>treeboot-done.sh</filename>\n"
            f"        <source><![CDATA[{cmd}\n]]></source>\n"
            "      </script>\n    </init-scripts>\n  </scripts>\n"
        )
        return text.replace("</profile>", script + "</profile>", 1)
    if name == "user-data" and "late-commands:" not in text:
        m = re.search(r"^autoinstall:\n((?:[ ]+)\S)", text, re.MULTILINE)
        if m is None:
            return None
        indent = m.group(1)[:-1]
        block = f'{indent}late-commands:\n{indent}  - "{cmd}"\n'
        return text[: m.start(1)] + block + text[m.start(1) :]
    return None


def _preseed(text: str, cmd: str) -> str:
    m = re.search(r"^d-i preseed/late_command string (.*)$", text, re.MULTILINE)
    if m is None:
        return text.rstrip("\n") + f"\nd-i preseed/late_command string {cmd}\n"
    return text[: m.start(1)] + f"{m.group(1)}; {cmd}" + text[m.end(1) :]
