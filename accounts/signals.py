"""Signals of the accounts app, for apps that hold connections authenticated earlier."""

from django.dispatch import Signal

# Sent with ``user_id`` when a credential of that user stopped being valid (a token
# revoked, for now; log-outs, password changes and deactivations have Django's own
# signals and post_save). chat closes the user's open sockets so they authenticate again.
credentials_changed = Signal()
