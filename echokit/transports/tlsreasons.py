"""
Why a TLS connection failed, in a few words, without importing a TLS library.

Plaintext-only servers never load pyOpenSSL (see L{echokit.runtime.reactors.without_tls}),
yet their connections report how they ended through the same code as TLS ones: this
module reads pyOpenSSL's C{SSL.Error} and the standard library's C{ssl.SSLError} only
if their modules are already loaded (an error of either type cannot exist otherwise).
"""

from __future__ import annotations

import re
import sys

from twisted.python.failure import Failure


def tls_failure_text(reason: Failure) -> str:
    """
    OpenSSL's reasons for a failed TLS connection, in a few words, whichever TLS
    library reported them (pyOpenSSL's C{SSL.Error} or the stdlib's C{ssl.SSLError}).

        >>> from OpenSSL import SSL
        >>> tls_failure_text(Failure(SSL.Error([("SSL routines", "", "wrong version number")])))
        'wrong version number'
        >>> import ssl
        >>> tls_failure_text(Failure(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")))
        'wrong version number'
    """
    value = reason.value
    pyopenssl = sys.modules.get("OpenSSL.SSL")
    if (
        pyopenssl is not None
        and isinstance(value, pyopenssl.Error)
        and value.args
        and isinstance(value.args[0], list)
    ):
        reasons = [str(entry[-1]) for entry in value.args[0] if entry and entry[-1]]
        if reasons:
            return "; ".join(reasons)
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(value, ssl.SSLError):
        text = re.sub(r"^\[[^]]*\] | \(_ssl\.c:\d+\)$", "", str(value.args[-1]))
        verify = getattr(value, "verify_message", None)
        return f"{text} ({verify})" if verify and verify not in text else text
    return reason.getErrorMessage()
