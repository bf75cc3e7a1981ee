"""The reliable event bus: topology, publisher, outbox relay, consumer with inbox, parking lot.

aio-pika carries the AMQP (ADR 0001 says why it over aiormq, FastStream or a hand-written
client); what no client library does is here: the retry ladder, the parking lot, the
transactional outbox and the inbox.
"""
