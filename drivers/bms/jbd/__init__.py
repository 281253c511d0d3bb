"""JBD / Xiaoxiang BMS (``DD .. 77`` frames): ``codec`` holds both directions, pure."""
