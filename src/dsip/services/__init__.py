"""Long-running services: did:web host, and later relay, DHT node, resolver, gateway, PSAP."""
