"""What downstream services use to read ragstream's topics: typed events on Kafka or RabbitMQ."""
