"""CAN BMS units described by a DBC file: the pure mapping layer and the python-can shell."""
