"""MkDocs hook: the Sphinx roles of the docstrings (``:func:`lstm_ref```) read as plain code in the API reference.

The docstrings name other objects the Sphinx way; mkdocstrings renders the
role's name in front of the code (``:func:lstm_ref``). This drops the role
and keeps the code.
"""

import re

ROLE = re.compile(r":(?:func|class|meth|data|mod|attr|exc|obj):(?=<code>)")


def on_page_content(html, page, config, files):
    return ROLE.sub("", html)
