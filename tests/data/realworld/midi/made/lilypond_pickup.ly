\version "2.24.0"
\header { title = "Pickup, odd meters and pedal" tagline = ##f }
\score {
  \new Staff \relative c' {
    \tempo 4 = 72
    \time 3/4
    \partial 4 g4 |
    c4 e g | c2 g4 |
    \time 5/4
    \tempo 4 = 108
    c,4\sustainOn d e f g\sustainOff |
    a4 g f e d |
    \time 7/8
    c8 d e f g a b |
    \time 12/8
    \tempo 4. = 66
    c4.\sustainOn b a g\sustainOff |
    \time 2/4
    c,2 \bar "|."
  }
  \midi { }
}
