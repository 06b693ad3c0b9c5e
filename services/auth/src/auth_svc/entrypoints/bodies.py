"""Request bodies and queries of the auth API (pydantic; unknown fields refused)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from auth_svc.domain.passwords import MAX_LENGTH
from auth_svc.domain.users import ROLES, Role, SignupRole, UserStatus, display_name_problem
from switchyard.pagination import PageQuery
from switchyard.web import RequestModel


def _displayable(value: str) -> str:
    problem = display_name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_displayable),
]
# Length and strength are checked by the password policy (with the user's data as context);
# the model only bounds the size so a huge string never reaches the hasher.
Password = Annotated[str, StringConstraints(min_length=1, max_length=4 * MAX_LENGTH)]
Email = Annotated[EmailStr, StringConstraints(max_length=254)]
# [0-9], not \d: \d also matches other scripts' digits, which would spend a try.
Code = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
# ABCD-EFGH-JKMN-PQRS; case, spaces and dashes do not matter (the domain normalises it).
SignInCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 -]{16,32}$")]
RefreshToken = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class RegisterBody(RequestModel):
    email: Email
    password: Password
    display_name: DisplayName
    role: SignupRole = "customer"


class VerifyEmailBody(RequestModel):
    email: Email
    code: Code


class ResendBody(RequestModel):
    email: Email
    purpose: Literal["verify_email", "reset_password"]


class LoginBody(RequestModel):
    email: Email
    password: Password


class SignInCodeBody(RequestModel):
    email: Email


class SignInCodeVerifyBody(RequestModel):
    email: Email
    code: SignInCode


class RefreshBody(RequestModel):
    refresh_token: RefreshToken


class ForgotBody(RequestModel):
    email: Email


class ResetBody(RequestModel):
    email: Email
    code: Code
    new_password: Password


class ChangePasswordBody(RequestModel):
    current_password: Password
    new_password: Password


class ProfilePatch(RequestModel):
    display_name: DisplayName


class DeleteAccountBody(RequestModel):
    password: Password


class RolesBody(RequestModel):
    roles: list[Role] = Field(min_length=1, max_length=len(ROLES))


class UserListQuery(PageQuery):
    # Up to 200 a page (the shared default caps at 100): what the published API allows.
    limit: int = Field(50, ge=1, le=200)
    status: UserStatus | None = None
    role: Role | None = None


class RevokedSessionsQuery(PageQuery):
    limit: int = Field(1000, ge=1, le=1000)
