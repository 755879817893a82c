"""Chat's writes, by concern: rooms (rooms, private rooms, members, direct messages, read
markers), messages (messages, typing, notices) and moderation (bans, mutes, locks,
reports, removals, the audit log). Import the module you need."""
