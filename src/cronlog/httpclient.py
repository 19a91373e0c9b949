"""httpx, imported without its command-line module.

`import httpx` also imports `httpx._main`, which loads click and rich when they are
installed, as they are beside cronlog: about 80 ms and 6 MB spent on every run for a
command-line client cronlog never uses. A None entry in sys.modules makes that one
import fail, which httpx handles by design. Modules import httpx from here.
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

__all__ = ["httpx"]
