"""Daly BMS (13-byte ``A5`` frames): ``codec`` holds both directions, pure."""
