"""Every email kind renders text and HTML parts from its event; user input is escaped in HTML."""

from __future__ import annotations

import datetime as dt
from email import policy
from email.parser import BytesParser, Parser

import pytest
from aiosmtplib.email import flatten_message
from jinja2 import UndefinedError

from notification_svc.adapters.smtp import compose_message
from notification_svc.adapters.templates import EmailRenderer
from notification_svc.domain.emails import (
    EmailKind,
    EmailRequest,
    OutgoingEmail,
    codes_blocked_email,
    otp_email,
    password_changed_email,
    session_reuse_email,
    sign_in_code_email,
    welcome_email,
)
from switchyard.events.auth import OtpRequested

from ..support import (
    login_code,
    otp,
    otp_blocked,
    password_changed,
    session_reuse,
    user_id,
    verified,
)

HOSTILE_NAME = '<script>alert("x")</script> & <b>Bob</b>'
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _code(uid: str, **kwargs):  # type: ignore[no-untyped-def]
    return otp(uid, **kwargs).model_copy(update={"expires_at": NOW + dt.timedelta(minutes=10)})


def requests_for_every_kind(display_name: str):  # type: ignore[no-untyped-def]
    uid = user_id()
    return {
        EmailKind.SIGNUP_CODE: otp_email(
            _code(uid, display_name=display_name, code="482913"), sent_at=NOW
        ),
        EmailKind.PASSWORD_RESET_CODE: otp_email(
            _code(uid, purpose="reset_password", display_name=display_name, code="771205"),
            sent_at=NOW,
        ),
        EmailKind.WELCOME: welcome_email(verified(uid, display_name=display_name), sent_at=NOW),
        EmailKind.PASSWORD_CHANGED: password_changed_email(
            password_changed(uid).model_copy(update={"display_name": display_name}), sent_at=NOW
        ),
        EmailKind.SESSION_REUSE_DETECTED: session_reuse_email(
            session_reuse(uid).model_copy(update={"display_name": display_name}), sent_at=NOW
        ),
        EmailKind.SIGN_IN_CODE: sign_in_code_email(
            login_code(uid).model_copy(
                update={"display_name": display_name, "expires_at": NOW + dt.timedelta(minutes=10)}
            ),
            sent_at=NOW,
        ),
        EmailKind.CODES_BLOCKED: codes_blocked_email(
            otp_blocked(uid).model_copy(
                update={"display_name": display_name, "blocked_until": NOW + dt.timedelta(hours=1)}
            ),
            sent_at=NOW,
        ),
        EmailKind.WEBHOOK_DISABLED: EmailRequest(
            kind=EmailKind.WEBHOOK_DISABLED,
            user_id=uid,
            recipient=f"{uid}@example.com",
            display_name=display_name,
            context={
                "url": "https://hooks.example.com/x",
                "reason": "gone",
                "subscription_id": "wh_1",
                "disabled_at": NOW,
                "failing_hours": "24",
            },
        ),
        EmailKind.PAYMENT: EmailRequest(
            kind=EmailKind.PAYMENT,
            user_id=uid,
            recipient=f"{uid}@example.com",
            display_name=display_name,
            context={
                "title": "Deposit received: $200.00",
                "body": "$200.00 was added to your wallet.",
                "facts": [("Amount", "$200.00")],
            },
        ),
    }


@pytest.fixture(scope="module")
def renderer() -> EmailRenderer:
    return EmailRenderer(product_name="Switchyard")


def test_every_kind_has_a_request_builder_and_both_templates(renderer: EmailRenderer) -> None:
    requests = requests_for_every_kind("Ada")
    assert set(requests) == set(EmailKind)
    for kind, request in requests.items():
        assert request.kind is kind
        rendered = renderer.render(kind, display_name=request.display_name, context=request.context)
        assert rendered.subject and "\n" not in rendered.subject
        assert "Hello Ada," in rendered.text
        assert "Hello Ada," in rendered.html
        assert rendered.html.lstrip().startswith("<!DOCTYPE html>")
        assert "Switchyard" in rendered.subject


@pytest.mark.parametrize("kind", list(EmailKind))
def test_display_names_are_escaped_in_html_and_verbatim_in_text(
    renderer: EmailRenderer, kind: EmailKind
) -> None:
    request = requests_for_every_kind(HOSTILE_NAME)[kind]
    rendered = renderer.render(kind, display_name=request.display_name, context=request.context)
    assert "<script>" not in rendered.html
    assert "<b>Bob</b>" not in rendered.html
    assert (
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;Bob&lt;/b&gt;"
        in rendered.html
    )
    assert f"Hello {HOSTILE_NAME}," in rendered.text  # plain text has no markup to escape
    assert HOSTILE_NAME not in rendered.subject


@pytest.mark.parametrize(
    ("kind", "code", "wording"),
    [
        (EmailKind.SIGNUP_CODE, "482913", "verify your email address"),
        (EmailKind.PASSWORD_RESET_CODE, "771205", "choose a new password"),
    ],
)
def test_codes_are_shown_prominently_and_never_in_the_subject(
    renderer: EmailRenderer, kind: EmailKind, code: str, wording: str
) -> None:
    request = requests_for_every_kind("Ada")[kind]
    rendered = renderer.render(kind, display_name="Ada", context=request.context)
    assert f"\n    {code}\n" in rendered.text  # on a line of its own
    assert "font-size:32px" in rendered.html and f">{code}</span>" in rendered.html
    assert wording in rendered.text and wording in rendered.html
    assert "expires in 10 minutes" in rendered.text
    assert code not in rendered.subject


def test_security_notices_say_what_happened_and_when(renderer: EmailRenderer) -> None:
    requests = requests_for_every_kind("Ada")
    changed = requests[EmailKind.PASSWORD_CHANGED]
    text = renderer.render(
        changed.kind, display_name="Ada", context={**changed.context, "changed_at": NOW}
    ).text
    assert "was changed on 2026-03-01 12:00 UTC" in text
    reset = renderer.render(
        changed.kind,
        display_name="Ada",
        context={**changed.context, "reason": "reset", "changed_at": NOW},
    )
    assert reset.subject == "Your Switchyard password was reset"
    reuse = requests[EmailKind.SESSION_REUSE_DETECTED]
    rendered = renderer.render(reuse.kind, display_name="Ada", context={"detected_at": NOW})
    assert "2026-03-01 12:00 UTC" in rendered.text and "2026-03-01 12:00 UTC" in rendered.html


def test_a_missing_template_value_is_an_error_not_a_blank(renderer: EmailRenderer) -> None:
    with pytest.raises(UndefinedError):
        renderer.render(
            EmailKind.SIGNUP_CODE, display_name="Ada", context={"expires_in_minutes": 10}
        )


def test_otp_purpose_picks_the_template_and_the_minutes_round_up() -> None:
    uid = user_id()
    data = otp(uid, purpose="reset_password").model_copy(
        update={"expires_at": NOW + dt.timedelta(minutes=9, seconds=1)}
    )
    request = otp_email(data, sent_at=NOW)
    assert request.kind is EmailKind.PASSWORD_RESET_CODE and request.category == "security"
    assert request.context["expires_in_minutes"] == 10
    assert otp_email(otp(uid), sent_at=NOW).category == "signup"
    assert "493817" not in repr(otp_email(otp(uid), sent_at=NOW))


def test_composed_message_has_both_parts_and_the_standard_headers(renderer: EmailRenderer) -> None:
    request = requests_for_every_kind("Ada")[EmailKind.SIGNUP_CODE]
    content = renderer.render(request.kind, display_name="Ada", context=request.context)
    outgoing = OutgoingEmail(
        recipient="ada@example.com",
        display_name='Ada "the first"\r\nBcc: evil@example.com',
        content=content,
        reference="dlv_0123",
    )
    message = compose_message(outgoing, mail_from="Switchyard <no-reply@switchyard.test>", now=NOW)
    parsed = BytesParser(policy=policy.default).parsebytes(message.as_bytes())
    assert parsed["From"] == "Switchyard <no-reply@switchyard.test>"
    assert parsed["Message-ID"] == "<dlv_0123@switchyard.test>"
    assert parsed["Date"] == "Sun, 01 Mar 2026 12:00:00 +0000"
    assert parsed["Subject"] == "Your Switchyard verification code"
    assert parsed["Bcc"] is None  # a display name cannot add headers
    assert parsed["To"].addresses[0].addr_spec == "ada@example.com"
    assert parsed.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in parsed.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert "482913" in parsed.get_body(("plain",)).get_content()
    assert "482913" in parsed.get_body(("html",)).get_content()


def _received_to(message) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """The To header's (display name, address) pairs as a receiver parses the bytes on the wire,
    flattened the way aiosmtplib sends them (SMTPUTF8 when an address is not ASCII)."""
    utf8 = not all(a.addr_spec.isascii() for a in message["To"].addresses)
    raw = flatten_message(message, utf8=utf8)
    parsed = Parser(policy=policy.default).parsestr(raw.decode())
    return [(a.display_name, a.addr_spec) for a in parsed["To"].addresses]


@pytest.mark.parametrize(
    "name",
    [
        "Zoë <evil@attacker.com>",
        "Zoë, evil@attacker.com",
        "名前; evil@attacker.com:",
        '.Zoë "x" (c) [d] \\ e',
        "Ada <evil@attacker.com>",
    ],
)
def test_a_display_name_never_shows_another_address_in_the_received_to_header(
    name: str,
) -> None:
    content = EmailRenderer(product_name="Switchyard").render(
        EmailKind.WELCOME, display_name="Ada", context={"verified_at": NOW}
    )
    outgoing = OutgoingEmail(
        recipient="ada@example.com", display_name=name, content=content, reference="dlv_1"
    )
    message = compose_message(outgoing, mail_from="Switchyard <no-reply@switchyard.test>")
    addresses = _received_to(message)
    assert [address for _, address in addresses] == ["ada@example.com"]
    assert "@" not in addresses[0][0]  # nor does the name pose as an address


@pytest.mark.parametrize(
    ("recipient", "on_the_wire"),
    [
        ("user@bücher.de", "user@xn--bcher-kva.de"),  # any server takes the IDNA form
        ("josé@example.com", "josé@example.com"),  # needs SMTPUTF8 (the adapter checks)
        ("zoë@bücher.de", "zoë@xn--bcher-kva.de"),
    ],
)
def test_internationalised_addresses_the_contract_accepts_can_be_composed(
    recipient: str, on_the_wire: str
) -> None:
    # What auth's contract hands over for such an address.
    email_address = str(
        OtpRequested.model_validate({**otp(user_id()).model_dump(), "email": recipient}).email
    )
    content = EmailRenderer(product_name="Switchyard").render(
        EmailKind.WELCOME, display_name="Zoë", context={"verified_at": NOW}
    )
    outgoing = OutgoingEmail(
        recipient=email_address, display_name="Zoë", content=content, reference="dlv_1"
    )
    message = compose_message(outgoing, mail_from="Switchyard <no-reply@switchyard.test>")
    assert _received_to(message) == [("Zoë", on_the_wire)]


def test_a_huge_display_name_is_cut_short_in_the_to_header() -> None:
    """Event data is not bounded by the contract; folding a header is slow per character."""
    content = EmailRenderer(product_name="Switchyard").render(
        EmailKind.WELCOME, display_name="Zoë", context={"verified_at": NOW}
    )
    outgoing = OutgoingEmail(
        recipient="ada@example.com", display_name="Zoë " * 25_000, content=content, reference="r"
    )
    message = compose_message(outgoing, mail_from="Switchyard <no-reply@switchyard.test>")
    name = message["To"].addresses[0].display_name
    assert name.startswith("Zoë Zoë") and len(name) <= 100
    assert [address for _, address in _received_to(message)] == ["ada@example.com"]
