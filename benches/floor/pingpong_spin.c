// The same ping-pong, but each side spins on recv(MSG_DONTWAIT) instead of sleeping.
// Build: gcc -O2 pingpong_spin.c
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>
#include <errno.h>
#include <sys/wait.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int rd(int fd,char*b){for(;;){int r=recv(fd,b,64,MSG_DONTWAIT);if(r>0||r==0)return r;if(errno!=EAGAIN)return -1;}}
int main(){int sv[2];socketpair(AF_UNIX,SOCK_STREAM,0,sv);char buf[64]={0};int n=200000;
 if(fork()==0){close(sv[0]);for(;;){if(rd(sv[1],buf)<=0)_exit(0);send(sv[1],buf,64,0);}}
 close(sv[1]);for(int i=0;i<20000;i++){send(sv[0],buf,64,0);rd(sv[0],buf);}
 double t0=now();for(int i=0;i<n;i++){send(sv[0],buf,64,0);rd(sv[0],buf);}double t=now()-t0;
 printf("raw spinning socketpair RTT: %.2f us\n",t/n);close(sv[0]);wait(0);}
