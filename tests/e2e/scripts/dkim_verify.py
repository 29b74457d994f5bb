"""Verifies a DKIM-signed message with dkimpy, an independent verifier.

Usage: dkim_verify.py MESSAGE_FILE "v=DKIM1; k=...; p=..."

The public key comes from the command line, never from DNS: the lookup of
<selector>._domainkey.<domain> answers with that record and nothing else.
Prints one JSON object: whether the message verifies, the signature's h=
tag, and whether a copy with one body byte changed still verifies.
"""

import json
import re
import sys

import dkim


def main():
    path, record = sys.argv[1], sys.argv[2].encode()
    with open(path, "rb") as file:
        message = re.sub(rb"\r?\n", b"\r\n", file.read())
    asked = []

    def dnsfunc(name, timeout=5):
        asked.append(name.decode() if isinstance(name, bytes) else name)
        return record

    verified = dkim.verify(message, dnsfunc=dnsfunc)
    head, body = message.split(b"\r\n\r\n", 1)
    # One letter of the body changed after signing.
    at = re.search(rb"[A-Za-z]", body).start()
    swapped = b"Q" if body[at:at + 1] != b"Q" else b"R"
    tampered = head + b"\r\n\r\n" + body[:at] + swapped + body[at + 1:]
    tampered_verified = dkim.verify(tampered, dnsfunc=lambda name, timeout=5: record)
    signature = dkim.DKIM(message)
    tags = dkim.util.parse_tag_value(
        next(value for name, value in signature.headers if name.lower() == b"dkim-signature")
    )
    print(json.dumps({
        "verified": verified,
        "tampered_verified": tampered_verified,
        "h": re.sub(rb"\s", b"", tags[b"h"]).decode(),
        "a": tags[b"a"].decode(),
        "asked": asked,
    }))


if __name__ == "__main__":
    main()
