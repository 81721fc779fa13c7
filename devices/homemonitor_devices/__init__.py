"""The device and gateway side of homemonitor: simulators, encoders, a reference gateway."""
