"""users: accounts (email unique case-insensitively, argon2 password hash, role).

consumes  nothing
publishes user.registered
HTTP      POST /users                    register {email, password, name} -> 201 the account
          POST /sessions/verify-password check {email, password} -> 200 the account, or 401
          GET  /users/me                 the caller's account

It never issues tokens: the gateway calls verify-password at login and owns the JWT and the
session, so this service stays the only place that ever sees a password or its hash.
"""
