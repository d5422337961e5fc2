"""mikoto-rtc signaling node: rooms, participants and WebRTC negotiation relay."""
