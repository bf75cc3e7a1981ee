"""The operators' console: the platform watched live in a browser, for admins only.

    eventshop console            # http://127.0.0.1:8090/ (started by `eventshop up` too)

Pages: the saga live (orders per state, the latest orders with each step's time, cancellations
by reason, orders/s and time to final over the last minutes), the services (ready, consumers,
queue depth, outbox backlog, parked), the parking lot (inspect, replay, purge, after a
confirmation) and one order (its event stream as a timeline, its state as of any version, its
trace as a waterfall). Changes are pushed to the page with server-sent events; plots are SVG
drawn here, so the pages read without JavaScript, and no request leaves the machine.

Why a process of its own and not routes of the gateway: it acts as the operator (the broker's
`eventshop-operator` user, which may re-publish a parked event under its producer's name, and
the database as the CLI reads it). Those credentials never enter the internet-facing gateway
(docs/SECURITY.md). The login is still the API's: the console sends the form to the gateway's
`/auth/login`, keeps the token in an HttpOnly, SameSite=Strict cookie and asks the gateway who
it belongs to (`/users/me`) on each request (cached for a few seconds): only admin accounts
get in, everyone else gets the login page (no session) or 403 (not an admin). It reads
through the functions the CLI uses (`eventshop status`, `dlq`, `events`, `trace`), never SQL
copies of them.
"""
