"""The sign-up form: Django's, refusing the usernames the server speaks as."""

from __future__ import annotations

from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

# The assistant's replies in rooms are by the user "assistant": nobody may sign up as it,
# in any case (docs/protocol.md, "The assistant in a room").
ASSISTANT_USERNAME = "assistant"
RESERVED_USERNAMES = frozenset({ASSISTANT_USERNAME})


class SignupForm(UserCreationForm[User]):
    def clean_username(self) -> str:
        username: str = super().clean_username()
        if username.lower() in RESERVED_USERNAMES:
            raise ValidationError("This username is reserved.", code="reserved")
        return username
