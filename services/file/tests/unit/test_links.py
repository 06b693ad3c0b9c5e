"""Signed links: authentic, unexpired, rotation-friendly, and tamper-evident."""

from __future__ import annotations

import pytest

from file_svc.domain.links import LinkRefused, LinkSigner

FILE = "f_019c3a81aa0b4c1d8e2f3a4b5c6d7e8f"


def refused(signer: LinkSigner, expires: str, signature: str, file_id: str = FILE) -> str:
    with pytest.raises(LinkRefused) as caught:
        signer.verify(file_id, expires, signature, now=1000)
    return caught.value.slug


def test_a_link_verifies_until_it_expires() -> None:
    signer = LinkSigner([b"k" * 32])
    link = signer.link(FILE, 2000)
    assert link.path.startswith(f"/api/v1/files/{FILE}/content?expires=2000&signature=")
    signature = signer.signature(FILE, 2000)
    signer.verify(FILE, "2000", signature, now=1999)
    with pytest.raises(LinkRefused) as caught:
        signer.verify(FILE, "2000", signature, now=2000)
    assert caught.value.slug == "link-expired"


def test_tampering_is_refused() -> None:
    signer = LinkSigner([b"k" * 32])
    signature = signer.signature(FILE, 2000)
    assert refused(signer, "2001", signature) == "invalid-link"
    assert refused(signer, "2000", signature, "f_" + "0" * 32) == "invalid-link"
    assert (
        refused(signer, "2000", signature[:-1] + ("A" if signature[-1] != "A" else "B"))
        == "invalid-link"
    )
    assert refused(signer, "2000", "") == "invalid-link"
    assert refused(signer, "2000", "%%%") == "invalid-link"
    assert refused(signer, "2000", "A" * 500) == "invalid-link"
    assert refused(signer, "-5", signature) == "invalid-link"
    assert refused(signer, "２０００", signature) == "invalid-link"  # non-ASCII digits


def test_expired_is_only_said_of_authentic_links() -> None:
    signer = LinkSigner([b"k" * 32])
    assert refused(signer, "500", signer.signature(FILE, 500)) == "link-expired"
    assert refused(signer, "500", LinkSigner([b"x" * 32]).signature(FILE, 500)) == "invalid-link"


def test_rotation_signs_with_the_first_key_and_verifies_with_all() -> None:
    old, new = b"o" * 32, b"n" * 32
    before = LinkSigner([old]).signature(FILE, 2000)
    rotated = LinkSigner([new, old])
    rotated.verify(FILE, "2000", before, now=1000)
    assert rotated.signature(FILE, 2000) == LinkSigner([new]).signature(FILE, 2000)
    assert refused(LinkSigner([new]), "2000", before) == "invalid-link"


def test_only_the_issued_spelling_of_a_link_is_accepted() -> None:
    signer = LinkSigner([b"k" * 32])
    file_id, expires = "f_" + "a" * 32, 2_000_000_000
    signature = signer.signature(file_id, expires)
    signer.verify(file_id, str(expires), signature, now=0)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    low_bits = signature[:-1] + alphabet[alphabet.index(signature[-1]) ^ 1]
    for given_expires, given in (
        (f"0{expires}", signature),
        (f"+{expires}", signature),
        (f" {expires}", signature),
        (str(expires), signature + "="),
        (str(expires), low_bits),
        (str(expires), signature[:20] + "." + signature[20:]),
        (str(expires), signature.replace("-", "+").replace("_", "/") + "+"),
    ):
        with pytest.raises(LinkRefused) as refused:
            signer.verify(file_id, given_expires, given, now=0)
        assert refused.value.slug == "invalid-link"
