"""Push through Firebase Cloud Messaging with the real ``firebase-admin`` library.

Credentials come from the service-account file (``FCM_CREDENTIALS_FILE``); the OAuth token
exchange goes to that file's ``token_uri``. firebase-admin has no public setting for the
send endpoint, so :func:`point_at_endpoint` is the one place that redirects it to
``FCM_ENDPOINT`` (tested in ``tests/integration/test_push.py`` against a local fake FCM).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import firebase_admin
from firebase_admin import credentials, exceptions, messaging
from google.auth.exceptions import RefreshError, TransportError
from google.auth.transport.requests import Request as GoogleRequest

from notification_svc.domain.push import MAX_BATCH, Push, PushAuthFailed, PushOutcome, PushResult

log = logging.getLogger("notification.fcm")


def fcm_send_url(endpoint: str, project_id: str) -> str:
    return f"{endpoint.rstrip('/')}/v1/projects/{project_id}/messages:send"


def point_at_endpoint(app: firebase_admin.App, endpoint: str) -> str:
    """Send this firebase-admin app's messages to ``{endpoint}/v1/projects/{id}/messages:send``.

    The library builds the URL from a class constant into its messaging service (cached per
    app); this sets that instance's URL. Returns the URL now used."""
    service = messaging._get_messaging_service(app)  # noqa: SLF001 - no public override exists
    url = fcm_send_url(endpoint, service._project_id)  # noqa: SLF001
    service._fcm_url = url  # noqa: SLF001
    return url


class FcmPusher:
    """Sends pushes in batches of at most 500 (FCM's limit per multicast)."""

    def __init__(self, credentials_file: Path, *, endpoint: str, timeout: float = 10.0) -> None:
        certificate = credentials.Certificate(str(credentials_file))
        self.app = firebase_admin.initialize_app(
            certificate,
            options={"httpTimeout": timeout},
            name=f"notification-{uuid.uuid4().hex[:8]}",
        )
        self.send_url = point_at_endpoint(self.app, endpoint)
        self._credential = certificate.get_credential()
        self._refresh_lock = asyncio.Lock()

    async def _ensure_token(self) -> None:
        """Refresh the access token off the event loop (google-auth's refresh is blocking)."""
        if self._credential.valid:
            return
        async with self._refresh_lock:
            if self._credential.valid:
                return
            try:
                await asyncio.to_thread(self._credential.refresh, GoogleRequest())
            except (RefreshError, TransportError) as error:
                raise PushAuthFailed(f"FCM token exchange failed: {error}"[:300]) from None

    async def send(self, pushes: Sequence[Push]) -> list[PushResult]:
        """One result per push, in order. Raises :class:`PushAuthFailed` when no token can be had."""
        await self._ensure_token()
        results: list[PushResult] = []
        for start in range(0, len(pushes), MAX_BATCH):
            batch = list(pushes[start : start + MAX_BATCH])
            response = await messaging.send_each_async(
                [_message(push) for push in batch], dry_run=False, app=self.app
            )
            results += [
                _result(push, answer)
                for push, answer in zip(batch, response.responses, strict=True)
            ]
        return results

    async def close(self) -> None:
        service = messaging._get_messaging_service(self.app)  # noqa: SLF001
        await service._async_client.aclose()  # noqa: SLF001 - closed on our loop first
        # delete_app closes its services with asyncio.run (its own loop): not on ours.
        await asyncio.to_thread(firebase_admin.delete_app, self.app)


def _message(push: Push) -> messaging.Message:
    return messaging.Message(
        token=push.token,
        notification=messaging.Notification(title=push.title, body=push.body),
        data=dict(push.data),
        android=messaging.AndroidConfig(collapse_key=push.collapse_key, priority="high"),
        apns=messaging.APNSConfig(
            payload=messaging.APNSPayload(aps=messaging.Aps(thread_id=push.thread_id))
        ),
        webpush=messaging.WebpushConfig(headers={"Topic": push.collapse_key[:32]}),
    )


def _retry_after(error: exceptions.FirebaseError) -> float | None:
    response: Any = error.http_response
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _status(error: exceptions.FirebaseError) -> int | None:
    response: Any = error.http_response
    return int(response.status_code) if response is not None else None


def _result(push: Push, answer: messaging.SendResponse) -> PushResult:
    if answer.success:
        return PushResult(push, PushOutcome.SENT, str(answer.message_id))
    error = answer.exception
    detail = f"{type(error).__name__}: {error}"[:200]
    if isinstance(error, messaging.UnregisteredError):
        return PushResult(push, PushOutcome.TOKEN_GONE, detail)
    if isinstance(error, exceptions.InvalidArgumentError) and "token" in str(error).lower():
        return PushResult(push, PushOutcome.TOKEN_GONE, detail)
    status = _status(error)
    if isinstance(error, exceptions.UnauthenticatedError | exceptions.PermissionDeniedError):
        return PushResult(push, PushOutcome.AUTH_FAILED, detail)
    transient = (
        status == 429
        or (status is not None and status >= 500)
        or isinstance(
            error,
            exceptions.ResourceExhaustedError
            | exceptions.UnavailableError
            | exceptions.InternalError
            | exceptions.DeadlineExceededError
            | exceptions.UnknownError,
        )
    )
    if transient:
        return PushResult(push, PushOutcome.TRANSIENT, detail, retry_after=_retry_after(error))
    return PushResult(push, PushOutcome.REJECTED, detail)
