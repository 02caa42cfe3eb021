// Package rules chooses the backend of an l7 VIP for a request (issue
// 14, seed S1 §4 and §8): the VIP's rules, compiled from its
// configuration, narrow the backends by the request's host, path,
// fields and cookies; the URL patterns the backends' health rows report
// narrow them by path; and the health-and-load weights pick one among
// the rest, by weighted rendezvous hashing so that equal inputs give
// equal choices.
//
// The package knows neither the health cache nor the control process:
// the caller hands Choose the candidates (each backend's name, current
// weight and URL patterns) and answers 503 when Choose finds none.
package rules
