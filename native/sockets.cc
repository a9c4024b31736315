// Socket options Node does not expose: TCP MD5 signatures (RFC 2385) for BGP sessions.
#include <arpa/inet.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

namespace peak {

namespace {

// socketCreate(4|6) -> fd of a non-blocking TCP socket, to set options on before connect().
Napi::Value SocketCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fam = ArgInt(info, 0, "family");
  if (fam != 4 && fam != 6) throw Napi::TypeError::New(env, "family must be 4 or 6");
  int fd = socket(fam == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "create tcp socket", errno);
  return Napi::Number::New(env, fd);
}

// tcpMd5Set(fd, peerAddress, key) — key empty removes the signature for that peer.
Napi::Value TcpMd5Set(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  std::string addr = ArgString(info, 1, "peerAddress");
  std::string key = ArgString(info, 2, "key");
  if (key.size() > TCP_MD5SIG_MAXKEYLEN)
    throw Napi::TypeError::New(env, "key must be at most " + std::to_string(TCP_MD5SIG_MAXKEYLEN) + " bytes");
  struct tcp_md5sig sig;
  memset(&sig, 0, sizeof(sig));
  struct sockaddr_in* a4 = (struct sockaddr_in*)&sig.tcpm_addr;
  struct sockaddr_in6* a6 = (struct sockaddr_in6*)&sig.tcpm_addr;
  if (inet_pton(AF_INET, addr.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
  } else if (inet_pton(AF_INET6, addr.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
  } else {
    throw Napi::TypeError::New(env, "peerAddress \"" + addr + "\" is not an IP address");
  }
  sig.tcpm_keylen = (uint16_t)key.size();
  memcpy(sig.tcpm_key, key.data(), key.size());
  if (setsockopt(fd, IPPROTO_TCP, TCP_MD5SIG, &sig, sizeof(sig)) != 0)
    ThrowErrno(env, "set TCP_MD5SIG for " + addr + " on fd " + std::to_string(fd), errno);
  return env.Undefined();
}

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("socketCreate", Napi::Function::New(env, SocketCreate));
  exports.Set("tcpMd5Set", Napi::Function::New(env, TcpMd5Set));
}

}  // namespace peak
