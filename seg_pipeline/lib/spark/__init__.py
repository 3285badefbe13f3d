"""The Spark engine: a local Connect server, and tables between the driver and Spark."""
