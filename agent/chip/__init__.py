"""Reading the chip of the Vietnamese citizen ID (CCCD): readers, secure messaging, data groups, checks."""
