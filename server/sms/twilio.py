"""Twilio: sending through the Messages REST API, and checking webhook signatures.
The only module that talks to Twilio.

Sending: ``POST {TWILIO_API_BASE}/2010-04-01/Accounts/{sid}/Messages.json`` with HTTP
Basic auth and form fields ``To``, ``From``, ``Body``, ``StatusCallback``; 201 with a
``sid``. 4xx is permanent (21610 also opts the patient out), 5xx, 429 and timeouts are
transient. Whether the account holds a number (before the operator assigns it to a
clinic): ``GET .../IncomingPhoneNumbers.json?PhoneNumber=+1...``. Signatures are
checked with the ``twilio`` package's ``RequestValidator`` against the URL rebuilt
from ``PUBLIC_URL`` (a TLS-terminating proxy changes the URL the app sees), over every
form parameter received.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import httpx
from twilio.request_validator import RequestValidator

from server.sms.base import PermanentFailure, Sent, SmsProvider, TransientFailure

# Twilio answers in well under a second; 10 s covers a slow moment without holding a
# worker for long (a timeout is retried like a 5xx).
TIMEOUT_SECONDS = 10.0


class TwilioProvider(SmsProvider):
    name = "twilio"

    def __init__(self, *, account_sid: str, auth_token: str, api_base: str,
                 status_callback: str, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = TIMEOUT_SECONDS):
        account_url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}"
        self._url = f"{account_url}/Messages.json"
        self._numbers_url = f"{account_url}/IncomingPhoneNumbers.json"
        self._status_callback = status_callback
        self._client = httpx.AsyncClient(auth=(account_sid, auth_token),
                                         timeout=timeout, transport=transport)

    async def send(self, *, account_id: str, to: str, from_: str, body: str) -> Sent:
        form = {"To": to, "From": from_, "Body": body, "StatusCallback": self._status_callback}
        try:
            response = await self._client.post(self._url, data=form)
        except httpx.TimeoutException:
            raise TransientFailure("timeout", "Twilio did not answer in time") from None
        except httpx.TransportError as exc:
            raise TransientFailure("network", f"Twilio unreachable: {type(exc).__name__}") \
                from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientFailure(str(response.status_code),
                                   f"Twilio answered {response.status_code}")
        payload = _json(response)
        if response.status_code >= 400:
            code = str(payload.get("code") or response.status_code)
            raise PermanentFailure(code, f"Twilio refused the message ({code})")
        sid = payload.get("sid")
        if not isinstance(sid, str) or not sid:
            raise TransientFailure("bad_response", "Twilio's answer had no sid")
        return Sent(sid=sid, status=str(payload.get("status") or "queued"))

    async def owns_number(self, number: str) -> bool:
        """Whether this Twilio account holds ``number`` (E.164).

        Raises:
            TransientFailure: Twilio could not be asked, or refused to answer.
        """
        try:
            response = await self._client.get(self._numbers_url,
                                              params={"PhoneNumber": number})
        except httpx.TransportError as exc:
            raise TransientFailure("network", f"Twilio unreachable: {type(exc).__name__}") \
                from None
        if response.status_code != 200:
            raise TransientFailure(str(response.status_code),
                                   f"Twilio answered {response.status_code}")
        held = _json(response).get("incoming_phone_numbers")
        return isinstance(held, list) and any(
            isinstance(entry, dict) and entry.get("phone_number") == number for entry in held)

    async def close(self) -> None:
        await self._client.aclose()


def _json(response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class _Params:
    """Form parameters with every value of a repeated name (``RequestValidator`` reads
    them through ``getlist``): Twilio signs all of them, a plain dict keeps one."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def getlist(self, name: str) -> list[str]:
        return self._values[name]


class SignatureChecker:
    """``X-Twilio-Signature`` against the public URL of our own webhook."""

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def valid(self, url: str, params: Iterable[tuple[str, str]], signature: str | None
              ) -> bool:
        """``params`` are every (name, value) pair received, repeats included."""
        if not signature:
            return False
        return bool(self._validator.validate(url, _Params(params), signature))
